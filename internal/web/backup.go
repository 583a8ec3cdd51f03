package web

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/state"
)

// The backup page of the operator console, /console/backups: per product
// what `lifeline backup status` shows, red or green with the reasons,
// refreshed live by a small script that reads /console/backups/status.json
// every two seconds. It uses the console's sign-in (status_console.go).

//go:embed backup_assets
var backupAssets embed.FS

// Backups reads the repository's status of every product.
type Backups struct {
	Repo     *backup.Repo
	Products []string // in config order
	// BacklogLimit turns a product red past this many waiting changes.
	BacklogLimit int64
}

// backupsView is the JSON the page and /api/v1/backups serve.
type backupsView struct {
	Now      time.Time       `json:"now"`
	Products []backup.Status `json:"products"`
}

func (b *Backups) view(ctx context.Context) (backupsView, error) {
	v := backupsView{Now: time.Now().UTC(), Products: []backup.Status{}}
	for _, p := range b.Products {
		st, err := b.Repo.Status(ctx, p, b.BacklogLimit)
		if err != nil {
			return v, err
		}
		v.Products = append(v.Products, st)
	}
	return v, nil
}

// backupRoutes adds the console page, its JSON and /api/v1/backups.
func (s *Server) backupRoutes(mux *http.ServeMux) {
	if s.Backups == nil {
		return
	}
	mux.HandleFunc("GET /api/v1/backups", s.requireRole(state.RoleViewer, s.backupsJSON))
	mux.HandleFunc("GET /console/backups", s.consoleBackups)
	mux.HandleFunc("GET /console/backups/status.json", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := s.consoleAuth(w, r, state.RoleViewer); ok {
			s.backupsJSON(w, r)
		}
	})
	assets, _ := fs.Sub(backupAssets, "backup_assets")
	mux.Handle("GET /console/backups/assets/", http.StripPrefix("/console/backups/assets/", http.FileServerFS(assets)))
}

func (s *Server) backupsJSON(w http.ResponseWriter, r *http.Request) {
	v, err := s.Backups.view(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) consoleBackups(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.consoleAuth(w, r, state.RoleViewer); !ok {
		return
	}
	page, err := backupAssets.ReadFile("backup_assets/backups.html")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	privatePage(w.Header())
	_, _ = w.Write(page)
}
