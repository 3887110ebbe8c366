package storage

import "testing"

func TestMariaDBReturns(t *testing.T) {
	for version, want := range map[string]bool{
		"10.11.19-MariaDB-0+deb12u1": true,
		"10.5.2-MariaDB":             true,
		"11.4.3-MariaDB-log":         true,
		"10.4.34-MariaDB":            false,
		"8.0.39":                     false,
		"8.4.2-commercial":           false,
		"5.5.5-10.11.6-MariaDB":      false, // the old replication prefix: read as 5.5, so no RETURNING is tried
	} {
		if got := mariaDBReturns(version); got != want {
			t.Errorf("%s: %v, want %v", version, got, want)
		}
	}
}
