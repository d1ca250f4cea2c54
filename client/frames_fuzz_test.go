package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/drover/drover/api"
)

// FuzzWatchFrames reads arbitrary bytes as a watch stream: never a panic;
// every complete line is an event or a *FrameError after which the stream
// reads on; a line cut off by the end of the stream is the end, not a bad
// frame; and a well-formed frame gives back what it carried.
func FuzzWatchFrames(f *testing.F) {
	good, _ := json.Marshal(map[string]any{"name": api.EventChange, "revision": 7, "resource": map[string]any{"type": "stack", "id": "st-1", "name": "web"}})
	f.Add(append(good, '\n'))
	f.Add([]byte("{\"name\":\"ping\",\"revision\":3}\n\n{not json}\n{\"name\":\"resource.change\",\"revision\":1,\"resource\":[1]}\n"))
	f.Add([]byte("{\"name\":\"resync\",\"message\":\"too old\"}\n{\"name\":\"resource.rem"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		w := &Watcher[api.Stack]{body: io.NopCloser(bytes.NewReader(stream)), rd: bufio.NewReader(bytes.NewReader(stream)),
			cancel: func() {}, idle: time.NewTimer(time.Hour), limit: time.Hour}
		defer w.idle.Stop()
		complete := bytes.Count(stream, []byte("\n"))
		for i := 0; i <= complete+1; i++ {
			ev, err := w.Next()
			var fe *FrameError
			switch {
			case err == nil:
				if bytes.Equal(stream, append(good, '\n')) && (ev.Name != api.EventChange || ev.Revision != 7 || ev.Object == nil || ev.Object.ID != "st-1") {
					t.Fatalf("a well-formed change frame came back as %+v", ev)
				}
			case errors.As(err, &fe):
				if fe.Err == nil {
					t.Fatalf("a FrameError without a cause: %v", fe)
				}
			default:
				return // the end of the stream
			}
		}
		t.Fatalf("%d complete lines read as more than %d frames", complete, complete+1)
	})
}
