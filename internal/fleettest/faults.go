package fleettest

// Exited returns the services that have returned by themselves, without
// being stopped, with the error each returned (nil if it returned none),
// and forgets them, so that a test can start them again with StartService
// as a supervisor restarts a process that exited. Tests that inject faults
// call it as they wait, to tell a fault that must end a service (a
// transaction that cannot end, say) from one that must not.
func (f *Fleet) Exited() map[string]error {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]error{}
	for name, s := range f.running {
		select {
		case err := <-s.done:
			s.cancel()
			delete(f.running, name)
			out[name] = err
		default:
		}
	}
	return out
}
