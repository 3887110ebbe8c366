package retry

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// FuzzSceneDeclaration reads a scene declaration from JSON as a client registers it, and
// checks that the scene the server makes of a well-named one always passes the scene's own
// rules (FromDeclaration keeps only the valid fields), that its policies compile, and that the
// policy clients are sent survives JSON.
func FuzzSceneDeclaration(f *testing.F) {
	for _, seed := range []string{
		`{"name":"send-email","mode":"LOCAL_REMOTE","local_attempts":3,"local_backoff":{"strategy":"exponential","base":"100ms","cap":"2s","jitter":"equal"},"timeout":"30s","callback":true,` +
			`"remote":{"max_attempts":5,"backoff":{"strategy":"fixed","interval":"10s"},"callback_max_attempts":3,"callback_backoff":{"strategy":"levels","levels":["1s",2000]}}}`,
		`{"name":"charge","mode":"REMOTE","remote":{"backoff":{"strategy":"cron","cron":"@every 1m"}}}`,
		`{"name":"notify","mode":"LOCAL","local_attempts":1000,"local_backoff":{"strategy":"random","min":"1s","max":"1h"},"timeout":"-5s"}`,
		`{"name":"x","remote":{"max_attempts":-1,"backoff":{"strategy":"exponential","base":"1s","multiplier":0.5}}}`,
		`{"name":"","mode":"nope"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d protocol.SceneDeclaration
		if json.Unmarshal(data, &d) != nil || !protocol.ValidName(d.Name) {
			return // the server skips a declaration it cannot read or name
		}
		sc := FromDeclaration(7, d)
		if err := sc.Validate(); err != nil {
			t.Fatalf("the scene made of %s breaks the scene's rules: %v", data, err)
		}
		for _, p := range []struct {
			what string
			err  error
		}{{"local_backoff", compileErr(sc.LocalBackoff.Compile())}, {"backoff", compileErr(sc.Backoff.Compile())},
			{"callback backoff", compileErr(sc.Callback.Backoff.Compile())}} {
			if p.err != nil {
				t.Fatalf("%s of the scene made of %s: %v", p.what, data, p.err)
			}
		}
		cp := sc.ClientPolicy()
		js, err := json.Marshal(cp)
		if err != nil {
			t.Fatalf("marshal the client policy: %v", err)
		}
		var back protocol.ScenePolicy
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatalf("read back the client policy %s: %v", js, err)
		}
		js2, _ := json.Marshal(back)
		if !reflect.DeepEqual(js, js2) {
			t.Fatalf("the client policy changes through JSON:\n%s\n%s", js, js2)
		}
	})
}

func compileErr[T any](_ T, err error) error { return err }
