package ops

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/arqonbus/arqonbus/sdk"
)

// The dashboard: plain HTML, CSS and JavaScript plus a vendored uPlot (MIT, static/vendor/uPlot.LICENSE).
// Nothing is loaded from another host.
//
//go:embed static
var staticFS embed.FS

type staticFile struct {
	body  []byte
	ctype string
	etag  string
	cache string
}

var (
	staticOnce  sync.Once
	staticFiles map[string]*staticFile
)

// loadStatic reads the embedded files once, with their content types and content-hash ETags: the
// dashboard under / and the JavaScript SDK under /sdk/.
func loadStatic() map[string]*staticFile {
	staticOnce.Do(func() {
		staticFiles = make(map[string]*staticFile)
		addFiles(staticFiles, staticFS, "static", "")
		addFiles(staticFiles, sdk.JS, "js", "/sdk")
	})
	return staticFiles
}

// addFiles adds every file under root of fsys to files, at urlPrefix plus its path below root.
func addFiles(files map[string]*staticFile, fsys fs.ReadFileFS, root, urlPrefix string) {
	_ = fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fsys.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		switch {
		case strings.HasSuffix(p, ".d.ts"):
			ct = "application/typescript; charset=utf-8"
		case path.Ext(p) == ".js":
			ct = "text/javascript; charset=utf-8"
		case path.Ext(p) == ".LICENSE":
			ct = "text/plain; charset=utf-8"
		}
		if ct == "" {
			ct = http.DetectContentType(b)
		}
		cache := "no-cache" // revalidate: cheap with the ETag
		if strings.HasPrefix(p, "static/vendor/") {
			cache = "public, max-age=86400"
		}
		files[urlPrefix+strings.TrimPrefix(p, root)] = &staticFile{
			body: b, ctype: ct, cache: cache,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
}

func staticHandler() http.Handler {
	files := loadStatic()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "/" || p == "/index.html" {
			p = "/index.html"
		}
		f := files[p]
		if f == nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("ETag", f.etag)
		h.Set("Cache-Control", f.cache)
		h.Set("X-Content-Type-Options", "nosniff")
		if strings.HasPrefix(p, "/sdk/") {
			// Pages on any origin may import the SDK as a module, which browsers fetch with CORS.
			h.Set("Access-Control-Allow-Origin", "*")
		}
		if p == "/index.html" {
			h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; "+
				"img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "+
				"object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
			h.Set("Referrer-Policy", "no-referrer")
		}
		http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(f.body))
	})
}
