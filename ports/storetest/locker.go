package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/ports"
)

// ExerciseLocker runs the contract suite of ports.Locker as subtests of t.
// newLocker must return a locker with no locks held, and arrange its
// cleanup with t.Cleanup; it is called once per subtest, with the subtest's
// t, and the subtests run in parallel.
//
// Leases that must not run out during a check last a minute; the ones that
// must run out last 200 ms and are waited for generously, so the suite does
// not depend on how fast the machine is.
func ExerciseLocker(t *testing.T, newLocker func(t *testing.T) ports.Locker) {
	t.Helper()
	const long = time.Minute

	t.Run("Exclusive", func(t *testing.T) {
		t.Parallel()
		l := newLocker(t)
		mustLock(t, l, "job", "a", long, true)
		mustLock(t, l, "job", "b", long, false)
		mustLock(t, l, "job", "a", long, true) // renewal
		mustLock(t, l, "job", "b", long, false)
		// Other names are other locks.
		mustLock(t, l, "other-job", "b", long, true)
		mustLock(t, l, "other-job", "a", long, false)
		mustLock(t, l, "job", "a", long, true)
	})

	t.Run("RenewalExtends", func(t *testing.T) {
		t.Parallel()
		l := newLocker(t)
		mustLock(t, l, "job", "a", 200*time.Millisecond, true)
		mustLock(t, l, "job", "a", long, true)
		time.Sleep(600 * time.Millisecond) // three times the first lease
		mustLock(t, l, "job", "b", long, false)
		mustLock(t, l, "job", "a", long, true)
	})

	t.Run("TakenOverAfterExpiry", func(t *testing.T) {
		t.Parallel()
		l := newLocker(t)
		const ttl = 200 * time.Millisecond
		began := time.Now()
		mustLock(t, l, "job", "a", ttl, true)
		var took time.Duration
		for {
			if mustTryLock(t, l, "job", "b", long) {
				took = time.Since(began)
				break
			}
			if time.Since(began) > 20*time.Second {
				t.Fatalf("holder b did not get the lock within 20 s of a's %v lease", ttl)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// A lease may be kept to the millisecond: allow for rounding.
		if took < ttl-5*time.Millisecond {
			t.Errorf("holder b got the lock %v after a took it for %v", took, ttl)
		}
		// a has lost it, and unlocking does not take it from b.
		mustLock(t, l, "job", "a", long, false)
		mustUnlock(t, l, "job", "a")
		mustLock(t, l, "job", "a", long, false)
		mustLock(t, l, "job", "b", long, true)
	})

	t.Run("ExpiredLockRenewedByItsHolder", func(t *testing.T) {
		t.Parallel()
		l := newLocker(t)
		mustLock(t, l, "job", "a", 100*time.Millisecond, true)
		time.Sleep(500 * time.Millisecond)
		mustLock(t, l, "job", "a", long, true)
		mustLock(t, l, "job", "b", long, false)
	})

	t.Run("Unlock", func(t *testing.T) {
		t.Parallel()
		l := newLocker(t)
		mustUnlock(t, l, "never-taken", "a")
		mustLock(t, l, "job", "a", long, true)
		mustUnlock(t, l, "job", "b") // not the holder: nothing happens
		mustLock(t, l, "job", "b", long, false)
		mustLock(t, l, "job", "c", long, false)
		mustUnlock(t, l, "job", "a")
		mustLock(t, l, "job", "b", long, true)
		mustLock(t, l, "job", "a", long, false)
		mustUnlock(t, l, "job", "b")
		mustUnlock(t, l, "job", "b") // twice is fine
		mustLock(t, l, "job", "a", long, true)
	})

	t.Run("RaceOneWinner", func(t *testing.T) {
		t.Parallel()
		l := newLocker(t)
		const holders = 10
		for round := range 5 {
			name := fmt.Sprintf("job-%d", round)
			var wg sync.WaitGroup
			start := make(chan struct{})
			got := make([]bool, holders)
			errs := make([]error, holders)
			ctx := testContext(t)
			for i := range holders {
				wg.Go(func() {
					<-start
					got[i], errs[i] = l.TryLock(ctx, name, fmt.Sprintf("holder-%d", i), long)
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i := range holders {
				switch {
				case errs[i] != nil:
					t.Errorf("round %d: TryLock by holder-%d: %v", round, i, errs[i])
				case got[i] && winner >= 0:
					t.Errorf("round %d: holder-%d and holder-%d both got the lock", round, winner, i)
				case got[i]:
					winner = i
				}
			}
			if winner < 0 {
				t.Fatalf("round %d: none of %d racing holders got the free lock", round, holders)
			}
			// The winner has it; the others still do not.
			mustLock(t, l, name, fmt.Sprintf("holder-%d", winner), long, true)
			mustLock(t, l, name, fmt.Sprintf("holder-%d", (winner+1)%holders), long, false)
		}
	})
}

func mustTryLock(t *testing.T, l ports.Locker, name, holder string, ttl time.Duration) bool {
	t.Helper()
	ok, err := l.TryLock(testContext(t), name, holder, ttl)
	if err != nil {
		t.Fatalf("TryLock(%q, %q, %v): %v", name, holder, ttl, err)
	}
	return ok
}

func mustLock(t *testing.T, l ports.Locker, name, holder string, ttl time.Duration, want bool) {
	t.Helper()
	if got := mustTryLock(t, l, name, holder, ttl); got != want {
		t.Fatalf("TryLock(%q, %q, %v) = %v, want %v", name, holder, ttl, got, want)
	}
}

func mustUnlock(t *testing.T, l ports.Locker, name, holder string) {
	t.Helper()
	if err := l.Unlock(testContext(t), name, holder); err != nil {
		t.Fatalf("Unlock(%q, %q): %v", name, holder, err)
	}
}
