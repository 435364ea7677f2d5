package installer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/layout"
)

// FetchTimeout bounds fetching an update's files over HTTPS: shorter
// than the verifier's wait for the whole update (admin.UpdateTimeout),
// which also covers reading back. FetchIdle bounds a wait without a
// byte: a stalled connection ends the update, which frees the node for
// the next one.
const (
	FetchTimeout = 20 * time.Minute
	FetchIdle    = 2 * time.Minute
)

// fetchIdle is FetchIdle; tests shorten it.
var fetchIdle = FetchIdle

// fetchChunk is how much of a fetched file is written at a time.
const fetchChunk = 1 << 20

// HTTPSClient returns the client updates are fetched with: TLS 1.2 or
// later against the CA roots in the PEM bundle roots (the measured
// system partition's), HTTPS only, redirects included.
func HTTPSClient(roots string) (*http.Client, error) {
	pem, err := os.ReadFile(roots)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", roots)
	}
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: time.Minute,
			Proxy:                 nil,
		},
		CheckRedirect: httpsOnly,
	}, nil
}

// httpsOnly follows up to 5 redirects, to HTTPS only.
func httpsOnly(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "https" {
		return fmt.Errorf("redirected to %s, not HTTPS", req.URL.Redacted())
	}
	if len(via) >= 5 {
		return errors.New("more than 5 redirects")
	}
	return nil
}

// fetch gets the update's files from its URL and writes them as if they
// had come down the stream (HandleUpdateChunk): the sizes and SHA-256s
// the verifier sent decide, not the server. A failure ends the update.
func (i *Installer) fetch(u *updating) {
	if err := i.fetchParts(u); err != nil {
		i.mu.Lock()
		if i.upd != u {
			i.mu.Unlock()
			return
		}
		i.endUpdate(u)
		i.mu.Unlock()
		i.updateFailed(u.req, u.slot, fmt.Errorf("fetching the update: %w; the node still boots the slot it runs", err))
	}
}

func (i *Installer) fetchParts(u *updating) error {
	if i.Client == nil {
		return errors.New("this node has no CA roots to verify an HTTPS server with (its image carries none): stream the update instead")
	}
	base, err := url.Parse(u.req.GetUrl())
	if err != nil || base.Scheme != "https" || base.Host == "" || base.User != nil {
		return fmt.Errorf("update URL %q: want https://host/path", u.req.GetUrl())
	}
	ctx, cancel := context.WithTimeout(context.Background(), FetchTimeout)
	defer cancel()
	// A wait without progress cancels the fetch; each chunk puts it off.
	idle := time.AfterFunc(fetchIdle, cancel)
	defer idle.Stop()
	alive := func() bool {
		idle.Reset(fetchIdle)
		i.mu.Lock()
		defer i.mu.Unlock()
		return i.upd == u
	}
	ukiSize := u.req.GetUkiASize()
	if u.slot == layout.SlotB {
		ukiSize = u.req.GetUkiBSize()
	}
	for _, p := range []struct {
		part apiv1.UpdatePart
		name string
		size int64
	}{{apiv1.UpdatePart_UPDATE_PART_SYSTEM, layout.BuildSystem, u.req.GetSystemSize()}, {apiv1.UpdatePart_UPDATE_PART_UKI, layout.BuildUKI(u.slot), ukiSize}} {
		if !alive() {
			return nil // the update ended: failed (and said so) or finished
		}
		loc := base.JoinPath(p.name)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
		if err != nil {
			return err
		}
		resp, err := i.Client.Do(req)
		if err != nil {
			// Not the URL it names: a redirect's may carry a signature.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (no progress for %s, or more than %s in all)", err, fetchIdle, FetchTimeout)
			}
			return fmt.Errorf("GET %s: %w", loc.Redacted(), err)
		}
		n, err := i.feed(u, p.part, p.size, resp, alive)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("GET %s: %w", loc.Redacted(), err)
		}
		if n < 0 {
			return nil // the update ended: failed (and said so) or finished
		}
	}
	return nil
}

// feed writes a response body as the part's chunks; it returns how much
// it wrote, or -1 once the update is no longer running.
func (i *Installer) feed(u *updating, part apiv1.UpdatePart, size int64, resp *http.Response, alive func() bool) (int64, error) {
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s", resp.Status)
	}
	body := io.LimitReader(resp.Body, size)
	var off int64
	for off < size {
		buf := make([]byte, min(fetchChunk, size-off))
		n, err := io.ReadFull(body, buf)
		if n > 0 {
			if !alive() {
				return -1, nil
			}
			i.HandleUpdateChunk(&apiv1.UpdateChunk{RequestId: u.req.GetRequestId(), Part: part, Offset: off, Data: buf[:n]})
			off += int64(n)
		}
		if err != nil {
			return off, fmt.Errorf("%d of %d bytes: %w", off, size, err)
		}
	}
	return off, nil
}
