package api

// Kind describes one collection of the API.
type Kind struct {
	Collection string // URL segment, e.g. "hosts"
	Type       string // object type, e.g. "host"
	IDPrefix   string // prefix of generated ids
	New        func() Object
}

// Kinds lists every collection, in the order the API documents them.
var Kinds = []Kind{
	{"hosts", "host", "h", func() Object { return &Host{} }},
	{"stacks", "stack", "st", func() Object { return &Stack{} }},
	{"services", "service", "svc", func() Object { return &Service{} }},
	{"containers", "container", "c", func() Object { return &Container{} }},
	{"networks", "network", "net", func() Object { return &Network{} }},
	{"certificates", "certificate", "cert", func() Object { return &Certificate{} }},
	{"apikeys", "apikey", "key", func() Object { return &APIKey{} }},
	{"registrationtokens", "registrationtoken", "rt", func() Object { return &RegistrationToken{} }},
	{"leases", "lease", "lease", func() Object { return &Lease{} }},
}

// KindByCollection finds a kind by its URL segment.
func KindByCollection(c string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Collection == c {
			return k, true
		}
	}
	return Kind{}, false
}

// KindByType finds a kind by its object type.
func KindByType(t string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Type == t {
			return k, true
		}
	}
	return Kind{}, false
}
