package backup

import (
	"io"
	"os"

	"lifeline/internal/fault"
)

// spool is a snapshot being built: the format's writer writes it to a
// temporary file, and the upload reads it back from there, so a snapshot
// costs disk space in the temp directory (os.TempDir: $TMPDIR, else /tmp),
// not memory, however large the product.
//
// The temp directory, not the repository's folder: the repository code
// never knows which blob store it writes to, and the file store copies
// every Put into its own temp file beside the object anyway.
type spool struct {
	f        *os.File
	unlinked bool
}

// newSpool creates the temp file. Where the system allows it (Unix) the
// file is unlinked at once, so its space is freed when it is closed even if
// the process dies while building; elsewhere close removes it.
func newSpool() (*spool, error) {
	f, err := os.CreateTemp("", "lifeline-object-*")
	if err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "set TMPDIR to a folder with room for the product's largest snapshot",
			"backup: creating a temp file to build a snapshot in")
	}
	return &spool{f: f, unlinked: os.Remove(f.Name()) == nil}, nil
}

func (s *spool) Write(p []byte) (int, error) { return s.f.Write(p) }

// reader rewinds the finished object, for its upload.
func (s *spool) reader() (io.Reader, error) {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "", "backup: rewinding the snapshot's temp file")
	}
	return s.f, nil
}

// close deletes the temp file; it is safe to call more than once.
func (s *spool) close() {
	if s == nil || s.f == nil {
		return
	}
	s.f.Close()
	if !s.unlinked {
		os.Remove(s.f.Name())
	}
	s.f = nil
}
