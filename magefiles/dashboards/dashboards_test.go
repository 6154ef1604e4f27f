package dashboards

import (
	"encoding/json"
	"testing"
)

// TestDashboardsAreWellFormed checks what Grafana needs to import a
// dashboard: unique uids and panel ids, a title and at least one query on
// every panel, each query on the data source variable, panels that do not
// overlap.
func TestDashboardsAreWellFormed(t *testing.T) {
	uids := map[string]bool{}
	for _, d := range All() {
		if d.UID == "" || uids[d.UID] || d.Title == "" {
			t.Errorf("dashboard %q: missing or repeated uid or title", d.UID)
		}
		uids[d.UID] = true
		b, err := d.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Panels []struct {
				ID      int
				Title   string
				GridPos struct{ X, Y, W, H int }
				Targets []struct {
					Expr       string
					Datasource struct{ UID string }
				}
			}
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		ids, cells := map[int]bool{}, map[[2]int]bool{}
		for _, p := range doc.Panels {
			if ids[p.ID] || p.Title == "" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %d %q: repeated id, no title or no query", d.UID, p.ID, p.Title)
			}
			ids[p.ID] = true
			cell := [2]int{p.GridPos.X, p.GridPos.Y}
			if cells[cell] || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("%s: panel %q overlaps another or has no size", d.UID, p.Title)
			}
			cells[cell] = true
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s: panel %q: empty query or a fixed data source", d.UID, p.Title)
				}
			}
		}
	}
}
