package task

import (
	"errors"
	"fmt"
)

// ErrNotFound is returned when no task has the requested id.
var ErrNotFound = errors.New("task not found")

// ErrIllegalTransition matches every [TransitionError] with errors.Is.
var ErrIllegalTransition = errors.New("illegal task transition")

// ErrInvalid matches every [ValidationError] with errors.Is.
var ErrInvalid = errors.New("invalid task")

// ErrResultTooLarge is the error recorded when a handler returns a result
// larger than MaxResultBytes.
var ErrResultTooLarge = errors.New("handler result exceeds 65536 bytes")

// TransitionError says that an action is not allowed in the task's status.
type TransitionError struct {
	ID     string
	From   Status
	Action string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot %s task %s: it is %s", e.Action, e.ID, e.From)
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// ValidationError says which field of a task is invalid and why.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + " " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }
