package status

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// Store is the part of Lifeline's state store the status domain uses;
// *state.Store implements it. The status tables are this package's own,
// created by its embedded migrations.
type Store interface {
	DB() *sql.DB
	// Rebind turns ? placeholders into the engine's.
	Rebind(q string) string
	// Migrate applies the named set of embedded goose migrations.
	Migrate(ctx context.Context, name string, fsys fs.FS) error
}

// micros and fromMicros are the state store's time encoding, which this
// package's tables share (state.Micros).
var micros, fromMicros = state.Micros, state.FromMicros

// sqlStore runs the status tables' SQL. Statements are written with ? and
// rebound per engine.
type sqlStore struct {
	st Store
}

func (s sqlStore) q(q string) string { return s.st.Rebind(q) }

func (s sqlStore) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
	_, err := tx.ExecContext(ctx, s.q(q), args...)
	return err
}

// write runs fn in a transaction and bumps the revision in the same one, so
// a reader that sees the new revision sees the new rows.
func (s sqlStore) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.st.DB().BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := s.exec(ctx, tx, "UPDATE status_revision SET rev = rev + 1 WHERE id = 1"); err != nil {
		return storeErr(err)
	}
	return storeErr(tx.Commit())
}

// storeErr marks database failures as Unavailable: the state store is the
// dependency that failed, and the page keeps serving its last snapshot.
func storeErr(err error) error {
	if err == nil || fault.CodeOf(err) != fault.Internal {
		return err
	}
	return fault.Wrap(err, fault.Unavailable, "check the state store (`state:` in lifeline.yaml)", "status store")
}

func (s sqlStore) revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.st.DB().QueryRowContext(ctx, "SELECT rev FROM status_revision WHERE id = 1").Scan(&rev)
	return rev, storeErr(err)
}

func (s sqlStore) putGroup(ctx context.Context, g *Group) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		err := s.exec(ctx, tx, "INSERT INTO status_groups (id, name_en, name_zh, position, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"+onNameTaken,
			g.ID, g.Name.En, g.Name.Zh, g.Position, micros(g.Created), micros(g.Updated))
		if err != nil {
			return storeErr(err)
		}
		var created int64
		if err := tx.QueryRowContext(ctx, s.q("SELECT id, created_at FROM status_groups WHERE name_en = ?"), g.Name.En).Scan(&g.ID, &created); err != nil {
			return storeErr(err)
		}
		g.Created = fromMicros(created)
		return storeErr(s.exec(ctx, tx, "UPDATE status_groups SET name_zh = ?, position = ?, updated_at = ? WHERE id = ?",
			g.Name.Zh, g.Position, micros(g.Updated), g.ID))
	})
}

// onNameTaken makes putting a group or component whose English name exists
// an update of the row that has it. Insert-or-nothing first, then read: two
// serve processes seeding the same config at once (a select finding
// nothing, then two inserts) would otherwise fail one on the unique name.
const onNameTaken = " ON CONFLICT (name_en) DO NOTHING"

func (s sqlStore) putComponent(ctx context.Context, c *Component) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		err := s.exec(ctx, tx, `INSERT INTO status_components
			(id, name_en, name_zh, description_en, description_zh, group_id, position, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`+onNameTaken,
			c.ID, c.Name.En, c.Name.Zh, c.Description.En, c.Description.Zh, c.GroupID, c.Position, micros(c.Created), micros(c.Updated))
		if err != nil {
			return storeErr(err)
		}
		var created int64
		if err := tx.QueryRowContext(ctx, s.q("SELECT id, created_at FROM status_components WHERE name_en = ?"), c.Name.En).Scan(&c.ID, &created); err != nil {
			return storeErr(err)
		}
		c.Created = fromMicros(created)
		return storeErr(s.exec(ctx, tx, `UPDATE status_components SET name_zh = ?, description_en = ?, description_zh = ?,
			group_id = ?, position = ?, updated_at = ? WHERE id = ?`,
			c.Name.Zh, c.Description.En, c.Description.Zh, c.GroupID, c.Position, micros(c.Updated), c.ID))
	})
}

func (s sqlStore) groups(ctx context.Context) ([]Group, error) {
	rows, err := s.st.DB().QueryContext(ctx, "SELECT id, name_en, name_zh, position, created_at, updated_at FROM status_groups ORDER BY position, name_en")
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	var out []Group
	for rows.Next() {
		var g Group
		var c, u int64
		if err := rows.Scan(&g.ID, &g.Name.En, &g.Name.Zh, &g.Position, &c, &u); err != nil {
			return nil, storeErr(err)
		}
		g.Created, g.Updated = fromMicros(c), fromMicros(u)
		out = append(out, g)
	}
	return out, storeErr(rows.Err())
}

func (s sqlStore) components(ctx context.Context) ([]Component, error) {
	rows, err := s.st.DB().QueryContext(ctx, `SELECT id, name_en, name_zh, description_en, description_zh, group_id, position, created_at, updated_at
		FROM status_components ORDER BY position, name_en`)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	var out []Component
	for rows.Next() {
		var c Component
		var cr, up int64
		if err := rows.Scan(&c.ID, &c.Name.En, &c.Name.Zh, &c.Description.En, &c.Description.Zh, &c.GroupID, &c.Position, &cr, &up); err != nil {
			return nil, storeErr(err)
		}
		c.Created, c.Updated = fromMicros(cr), fromMicros(up)
		out = append(out, c)
	}
	return out, storeErr(rows.Err())
}

func (s sqlStore) insertIncident(ctx context.Context, tx *sql.Tx, inc *Incident) error {
	links, _ := json.Marshal(orEmpty(inc.Links))
	return storeErr(s.exec(ctx, tx, `INSERT INTO status_incidents
		(id, kind, name_en, name_zh, impact, status, links, scheduled_for, scheduled_until, created_at, updated_at, resolved_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		inc.ID, inc.Kind, inc.Name.En, inc.Name.Zh, inc.Impact, inc.Status, string(links),
		micros(inc.ScheduledFor), micros(inc.ScheduledUntil), micros(inc.Created), micros(inc.Updated), micros(inc.Resolved)))
}

func (s sqlStore) saveIncident(ctx context.Context, tx *sql.Tx, inc *Incident) error {
	links, _ := json.Marshal(orEmpty(inc.Links))
	return storeErr(s.exec(ctx, tx, `UPDATE status_incidents SET name_en = ?, name_zh = ?, impact = ?, status = ?, links = ?,
		scheduled_for = ?, scheduled_until = ?, updated_at = ?, resolved_at = ? WHERE id = ?`,
		inc.Name.En, inc.Name.Zh, inc.Impact, inc.Status, string(links),
		micros(inc.ScheduledFor), micros(inc.ScheduledUntil), micros(inc.Updated), micros(inc.Resolved), inc.ID))
}

func (s sqlStore) insertUpdate(ctx context.Context, tx *sql.Tx, u *Update) error {
	body, err := json.Marshal(u.Body)
	if err != nil {
		return err
	}
	if err := s.exec(ctx, tx, "INSERT INTO status_updates (id, incident_id, status, body, author, created_at) VALUES (?, ?, ?, ?, ?, ?)",
		u.ID, u.IncidentID, u.Status, string(body), u.Author, micros(u.Created)); err != nil {
		return storeErr(err)
	}
	for i, c := range u.Changes {
		if err := s.exec(ctx, tx, "INSERT INTO status_component_changes (update_id, incident_id, component_id, status, seq) VALUES (?, ?, ?, ?, ?)",
			u.ID, u.IncidentID, c.ComponentID, c.Status, i); err != nil {
			return storeErr(err)
		}
	}
	return nil
}

// incidentFilter selects incidents by a WHERE clause over status_incidents i.
type incidentFilter struct {
	where string
	args  []any
}

// recent selects what the page and the JSON show: everything open, and
// everything created, resolved or scheduled within the uptime window.
func recent(now time.Time) incidentFilter {
	since := micros(now.AddDate(0, 0, -UptimeDays-1))
	return incidentFilter{
		where: "i.resolved_at = 0 OR i.resolved_at >= ? OR i.created_at >= ? OR i.scheduled_until >= ?",
		args:  []any{since, since, since},
	}
}

func byID(id string) incidentFilter { return incidentFilter{where: "i.id = ?", args: []any{id}} }

// incidents loads the selected incidents with their updates (newest first)
// and component changes, in three queries whatever the count.
func (s sqlStore) incidents(ctx context.Context, f incidentFilter) ([]Incident, error) {
	db := s.st.DB()
	rows, err := db.QueryContext(ctx, s.q(`SELECT i.id, i.kind, i.name_en, i.name_zh, i.impact, i.status, i.links,
		i.scheduled_for, i.scheduled_until, i.created_at, i.updated_at, i.resolved_at,
		(SELECT COUNT(*) FROM status_incident_tenants t WHERE t.incident_id = i.id)
		FROM status_incidents i WHERE `+f.where+` ORDER BY i.created_at DESC, i.id`), f.args...)
	if err != nil {
		return nil, storeErr(err)
	}
	var out []Incident
	index := map[string]int{}
	for rows.Next() {
		var inc Incident
		var links string
		var sf, su, cr, up, rs int64
		if err := rows.Scan(&inc.ID, &inc.Kind, &inc.Name.En, &inc.Name.Zh, &inc.Impact, &inc.Status, &links, &sf, &su, &cr, &up, &rs, &inc.Tenants); err != nil {
			rows.Close()
			return nil, storeErr(err)
		}
		if err := json.Unmarshal([]byte(links), &inc.Links); err != nil {
			rows.Close()
			return nil, fmt.Errorf("status: incident %s links: %w", inc.ID, err)
		}
		inc.ScheduledFor, inc.ScheduledUntil = fromMicros(sf), fromMicros(su)
		inc.Created, inc.Updated, inc.Resolved = fromMicros(cr), fromMicros(up), fromMicros(rs)
		inc.Updates = []Update{}
		index[inc.ID] = len(out)
		out = append(out, inc)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, storeErr(err)
	}
	if len(out) == 0 {
		return out, nil
	}

	changes := map[string][]ComponentChange{}
	crows, err := db.QueryContext(ctx, s.q(`SELECT c.update_id, c.component_id, c.status FROM status_component_changes c
		JOIN status_incidents i ON i.id = c.incident_id WHERE `+f.where+` ORDER BY c.update_id, c.seq`), f.args...)
	if err != nil {
		return nil, storeErr(err)
	}
	for crows.Next() {
		var uid string
		var c ComponentChange
		if err := crows.Scan(&uid, &c.ComponentID, &c.Status); err != nil {
			crows.Close()
			return nil, storeErr(err)
		}
		changes[uid] = append(changes[uid], c)
	}
	crows.Close()
	if err := crows.Err(); err != nil {
		return nil, storeErr(err)
	}

	urows, err := db.QueryContext(ctx, s.q(`SELECT u.id, u.incident_id, u.status, u.body, u.author, u.created_at FROM status_updates u
		JOIN status_incidents i ON i.id = u.incident_id WHERE `+f.where+` ORDER BY u.created_at DESC, u.id DESC`), f.args...)
	if err != nil {
		return nil, storeErr(err)
	}
	defer urows.Close()
	for urows.Next() {
		var u Update
		var body string
		var cr int64
		if err := urows.Scan(&u.ID, &u.IncidentID, &u.Status, &body, &u.Author, &cr); err != nil {
			return nil, storeErr(err)
		}
		if err := json.Unmarshal([]byte(body), &u.Body); err != nil {
			return nil, fmt.Errorf("status: update %s body: %w", u.ID, err)
		}
		u.Created, u.Changes = fromMicros(cr), changes[u.ID]
		i := index[u.IncidentID]
		out[i].Updates = append(out[i].Updates, u)
	}
	return out, storeErr(urows.Err())
}

func (s sqlStore) putTemplate(ctx context.Context, t *Template) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var id string
		var created int64
		err := tx.QueryRowContext(ctx, s.q("SELECT id, created_at FROM status_templates WHERE name = ?"), t.Name).Scan(&id, &created)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return storeErr(err)
		default:
			t.ID, t.Created = id, fromMicros(created)
		}
		body, err := json.Marshal(t)
		if err != nil {
			return err
		}
		if id == "" {
			return storeErr(s.exec(ctx, tx, "INSERT INTO status_templates (id, name, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
				t.ID, t.Name, string(body), micros(t.Created), micros(t.Updated)))
		}
		return storeErr(s.exec(ctx, tx, "UPDATE status_templates SET body = ?, updated_at = ? WHERE id = ?", string(body), micros(t.Updated), id))
	})
}

func (s sqlStore) templates(ctx context.Context, name string) ([]Template, error) {
	q, args := "SELECT body FROM status_templates ORDER BY name", []any{}
	if name != "" {
		q, args = "SELECT body FROM status_templates WHERE name = ?", []any{name}
	}
	rows, err := s.st.DB().QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	var out []Template
	for rows.Next() {
		var body string
		var t Template
		if err := rows.Scan(&body); err != nil {
			return nil, storeErr(err)
		}
		if err := json.Unmarshal([]byte(body), &t); err != nil {
			return nil, fmt.Errorf("status: template body: %w", err)
		}
		out = append(out, t)
	}
	return out, storeErr(rows.Err())
}

// countTargets counts the tenants an incident affects.
func (s sqlStore) countTargets(ctx context.Context, incidentID string) (int, error) {
	var n int
	err := s.st.DB().QueryRowContext(ctx, s.q("SELECT COUNT(*) FROM status_incident_tenants WHERE incident_id = ?"), incidentID).Scan(&n)
	return n, storeErr(err)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}
