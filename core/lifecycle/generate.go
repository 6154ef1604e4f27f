package lifecycle

// The unit tests of this package use moq fakes of the ports; regenerate
// them with `go generate ./...` (or `go tool mage generate`) after changing
// a port. CI fails when the committed fakes drift from the ports.
//go:generate go tool moq -rm -out ports_moq_test.go -pkg lifecycle ../../ports TaskStore JobQueue DeadLetterQueue Locker Handler Clock IDGenerator
