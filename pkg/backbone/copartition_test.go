package backbone

import (
	"maps"
	"slices"
	"testing"
)

func TestShareNumbersIsBalancedAndSticky(t *testing.T) {
	// Three members share 6 numbers; a fourth joins; one leaves.
	three := shareNumbers(6, []string{"a", "b", "c"}, nil)
	checkShare(t, 6, three)
	four := shareNumbers(6, []string{"a", "b", "c", "d"}, three)
	checkShare(t, 6, four)
	if moved := movedNumbers(three, four); moved != 1 {
		t.Fatalf("a fourth member moved %d numbers (%v → %v), want 1: quotas of 2, 2, 1 and 1, and it takes one", moved, three, four)
	}
	left := shareNumbers(6, []string{"a", "c", "d"}, four)
	checkShare(t, 6, left)
	if moved := movedNumbers(four, left); moved != len(four["b"]) {
		t.Fatalf("b leaving moved %d numbers (%v → %v), want only b's %d", moved, four, left, len(four["b"]))
	}
	// A number two members claim (one of them stale) is held once.
	claimed := shareNumbers(4, []string{"a", "b"}, map[string][]int32{"a": {0, 1}, "b": {1, 2, 3}})
	checkShare(t, 4, claimed)
	if !slices.Equal(claimed["a"], []int32{0, 1}) || !slices.Equal(claimed["b"], []int32{2, 3}) {
		t.Fatalf("claims {a: 0 1, b: 1 2 3} shared as %v", claimed)
	}
	// More members than numbers: some get none.
	checkShare(t, 2, shareNumbers(2, []string{"a", "b", "c"}, nil))
}

// checkShare checks that every number below n is held by exactly one
// member and that holdings differ by at most one.
func checkShare(t *testing.T, n int32, share map[string][]int32) {
	t.Helper()
	holder := map[int32]string{}
	least, most := int(n), 0
	for _, m := range slices.Sorted(maps.Keys(share)) {
		least, most = min(least, len(share[m])), max(most, len(share[m]))
		for _, p := range share[m] {
			if other, ok := holder[p]; ok {
				t.Fatalf("%d held by %s and %s: %v", p, other, m, share)
			}
			holder[p] = m
		}
	}
	if len(holder) != int(n) || most-least > 1 {
		t.Fatalf("share of %d numbers %v: %d held, %d to %d each", n, share, len(holder), least, most)
	}
}

func movedNumbers(before, after map[string][]int32) int {
	owner := map[int32]string{}
	for m, ps := range before {
		for _, p := range ps {
			owner[p] = m
		}
	}
	moved := 0
	for m, ps := range after {
		for _, p := range ps {
			if owner[p] != m {
				moved++
			}
		}
	}
	return moved
}
