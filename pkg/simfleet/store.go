package simfleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// store holds the clusters' states: in memory, or one file per cluster.
// Every method returns and takes copies, so callers never share maps.
type store interface {
	// load returns the state of id, and false if there is none.
	load(id string) (State, bool, error)
	// loadOrCreate returns the state of st.ID, storing st first if there
	// is none. It never overwrites an existing state.
	loadOrCreate(st State) (State, error)
	// save stores st, replacing what was there.
	save(st State) error
	// all returns every stored state.
	all() []State
}

type memStore struct {
	mu       sync.Mutex
	clusters map[string]State
}

func newMemStore() *memStore { return &memStore{clusters: map[string]State{}} }

func (s *memStore) load(id string) (State, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.clusters[id]
	return st.clone(), ok, nil
}

func (s *memStore) loadOrCreate(st State) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.clusters[st.ID]; ok {
		return cur.clone(), nil
	}
	s.clusters[st.ID] = st.clone()
	return st, nil
}

func (s *memStore) save(st State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clusters[st.ID] = st.clone()
	return nil
}

func (s *memStore) all() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]State, 0, len(s.clusters))
	for _, st := range s.clusters {
		out = append(out, st.clone())
	}
	return out
}

// dirStore keeps each cluster in <dir>/<id>.json. Files are only ever
// replaced whole (temporary file + rename, or a hard link for a file that
// must not exist yet), so a reader in another process never sees half a
// state.
type dirStore struct{ dir string }

func newDirStore(dir string) (*dirStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("simfleet: create state directory: %w", err)
	}
	return &dirStore{dir: dir}, nil
}

func (s *dirStore) path(id string) string { return filepath.Join(s.dir, id+".json") }

func (s *dirStore) load(id string) (State, bool, error) {
	return readState(s.path(id))
}

func readState(path string) (State, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("read sim cluster state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, false, fmt.Errorf("read sim cluster state %s: %w", path, err)
	}
	return st, true, nil
}

func (s *dirStore) loadOrCreate(st State) (State, error) {
	cur, found, err := s.load(st.ID)
	if err != nil || found {
		return cur, err
	}
	tmp, err := s.writeTemp(st)
	if err != nil {
		return State{}, err
	}
	defer os.Remove(tmp)
	// A hard link, unlike a rename, fails when the target exists: another
	// goroutine or process may have created the cluster since we looked,
	// perhaps already upgraded, and that state must win.
	err = os.Link(tmp, s.path(st.ID))
	if errors.Is(err, fs.ErrExist) {
		cur, found, err := s.load(st.ID)
		if err == nil && !found {
			err = fmt.Errorf("sim cluster state %s vanished while being created", s.path(st.ID))
		}
		return cur, err
	}
	if err != nil {
		// The file system cannot link (some cannot): leave the cluster
		// unsaved. Creating it here is only a convenience; the first Apply
		// saves it with a rename, which works everywhere.
		return st, nil
	}
	return st, nil
}

func (s *dirStore) save(st State) error {
	tmp, err := s.writeTemp(st)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(st.ID)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save sim cluster state: %w", err)
	}
	return nil
}

// writeTemp writes st to a new temporary file in the state directory (so
// that a rename or link to its final name stays on one file system) and
// returns its path. Its name does not end in ".json", so all never reads a
// leftover from a crash.
func (s *dirStore) writeTemp(st State) (string, error) {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode sim cluster %s: %w", st.ID, err)
	}
	f, err := os.CreateTemp(s.dir, st.ID+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("save sim cluster state: %w", err)
	}
	_, werr := f.Write(append(b, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("save sim cluster state %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

func (s *dirStore) all() []State {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil
	}
	var out []State
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		if st, ok, err := readState(filepath.Join(s.dir, e.Name())); err == nil && ok {
			out = append(out, st)
		}
	}
	return out
}
