// Package task holds the Task entity of opsbox: its fields, its statuses and
// the rules for moving between them. It does no I/O; every status change a
// program makes goes through a method here, so the rules live in one place.
//
// The lifecycle is
//
//	PENDING ──run──▶ QUEUED ──start──▶ RUNNING ──succeed──▶ DONE
//	   ▲                ▲                 │
//	   │                └──fail, retry────┤
//	   │                                  └──fail, last──▶ FAILED
//	   └─────────────── run (again) ◀──────────────────────────┘
//
// Run is accepted on PENDING and FAILED tasks (a FAILED task starts a new
// round of attempts). It is refused with a [TransitionError] on QUEUED and
// RUNNING tasks, which are already in flight, and on DONE tasks: a success is
// final, and work that must happen again is a new task.
package task
