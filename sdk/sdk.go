// Package sdk holds the client libraries users import; the server embeds the
// JavaScript one (JS) to serve it at /sdk/ on the HTTP port.
package sdk

import "embed"

// JS is js/arqonbus.js (the ES module) and js/arqonbus.d.ts (its types).
//
//go:embed js/arqonbus.js js/arqonbus.d.ts
var JS embed.FS
