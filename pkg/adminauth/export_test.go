package adminauth

// ConsumerName is the name of f's current consumer on the server, for tests
// that delete it as a node loss would.
func ConsumerName(f *Follower) string {
	if info := f.r.ConsumerInfo(); info != nil {
		return info.Name
	}
	return ""
}
