module github.com/opsbox/opsbox/apps

go 1.26.0

require (
	github.com/opsbox/opsbox v0.0.0
	github.com/opsbox/opsbox/adapters v0.0.0
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/cobra v1.10.2 // indirect
	github.com/spf13/pflag v1.0.10 // indirect
)

replace (
	github.com/opsbox/opsbox => ../
	github.com/opsbox/opsbox/adapters => ../adapters
)
