package auditor

// SetCrash installs the tests' fault injection: f runs at each step of a
// partition's writes (before-intent, after-intent, after-insert,
// before-checkpoint); an error stops the write or checkpoint there, as a
// crash would. Call it before Run.
func SetCrash(a *Auditor, f func(step string, p int) error) { a.crash = f }
