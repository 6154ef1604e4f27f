module github.com/opsbox/opsbox/magefiles

go 1.26.0

require (
	github.com/magefile/mage v1.17.2 // indirect
	github.com/matryer/moq v0.8.1 // indirect
	golang.org/x/mod v0.41.0 // indirect
	golang.org/x/sync v0.23.0 // indirect
	golang.org/x/tools v0.51.0 // indirect
)

tool (
	github.com/magefile/mage
	github.com/matryer/moq
)
