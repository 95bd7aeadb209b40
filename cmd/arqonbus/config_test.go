package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/ops"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigPrecedence(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "127.0.0.1" || c.Port != 9100 || c.TelemetryPort != 9101 || c.HTTPPort != 8080 || c.MaxMessageSize != 1<<20 || c.MaxConnections <= 0 {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = parseConfig([]string{"--port", "9200"}, env(map[string]string{"ARQONBUS_PORT": "9300", "ARQONBUS_HTTP_PORT": "8081", "ARQONBUS_IDLE_TIMEOUT": "90s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 9200 || c.HTTPPort != 8081 || c.IdleTimeout != 90*time.Second {
		t.Fatalf("flag over env over default: %+v", c)
	}
	if c.MaxRequestedBytes != 4*c.MaxOutboundBytes {
		t.Fatalf("max requested bytes %d, want four times %d", c.MaxRequestedBytes, c.MaxOutboundBytes)
	}
	c, err = parseConfig([]string{"--max-message-size", "65536", "--max-outbound-bytes", "65536"}, env(map[string]string{"ARQONBUS_MAX_REQUESTED_BYTES": "1000000"}), io.Discard)
	if err != nil || c.MaxRequestedBytes != 1000000 {
		t.Fatalf("equal message size and backlog, explicit requested bytes: %+v %v", c, err)
	}
}

func TestConfigBadValueNamesTheOption(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"ARQONBUS_PORT": "http"}, "ARQONBUS_PORT"},
		{[]string{"--max-message-size", "-1"}, nil, "--max-message-size"},
		{nil, map[string]string{"ARQONBUS_PING_INTERVAL": "soon"}, "ARQONBUS_PING_INTERVAL"},
		{nil, map[string]string{"ARQONBUS_REPLACE_DUPLICATE": "maybe"}, "ARQONBUS_REPLACE_DUPLICATE"},
		{nil, map[string]string{"ARQONBUS_LOG_LEVEL": "loud"}, "ARQONBUS_LOG_LEVEL"},
		{nil, map[string]string{"ARQONBUS_CLUSTER": "maybe"}, "ARQONBUS_CLUSTER"},
		{nil, map[string]string{"ARQONBUS_CLUSTER": "true"}, "ARQONBUS_CLUSTER"}, // needs storage=redis
		{[]string{"--cluster-node-ttl", "500ms"}, nil, "--cluster-node-ttl"},
		{nil, map[string]string{"ARQONBUS_REDIS_URL": "http://x"}, "ARQONBUS_REDIS_URL"},
		{nil, map[string]string{"ARQONBUS_STORAGE": "disk"}, "ARQONBUS_STORAGE"},
		{[]string{"--max-message-size", "8388608"}, nil, "--max-outbound-bytes"}, // a message must fit a backlog
		{nil, map[string]string{"ARQONBUS_MAX_OUTBOUND_BYTES": "524288"}, "--max-message-size"},
		{[]string{"--max-requested-bytes", "-1"}, nil, "--max-requested-bytes"},
		{nil, map[string]string{"ARQONBUS_FRAME_TIMEOUT": "0s"}, "ARQONBUS_FRAME_TIMEOUT"},
	}
	for _, tc := range cases {
		_, err := parseConfig(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %v: error %v, want one line naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}

// The connection cap leaves what the node needs besides under the file
// limit, and a limit too low for anything is refused in one line.
func TestConnectionBudget(t *testing.T) {
	fit, err := connectionBudget(512, 2, 16)
	if err != nil || fit <= 0 || fit >= 512-16-64-ops.MaxConnections {
		t.Fatalf("limit 512: %d, %v", fit, err)
	}
	more, _ := connectionBudget(1024, 2, 16)
	if more-fit != 512 {
		t.Fatalf("512 descriptors more give %d connections more", more-fit)
	}
	if _, err := connectionBudget(256, 2, 100); err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("limit 256 with 164 telemetry connections: %v", err)
	}
}
