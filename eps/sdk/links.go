package sdk

import (
	"context"
	"time"
)

// LinkOptions are the options of Client.Link.
type LinkOptions struct {
	// TTL is the link's lifetime, at least a minute; zero: the endpoint
	// server's default (72h unless configured).
	TTL time.Duration
	// DisplayName is the office's name as the page shows it; empty: the
	// member's display name in the directory.
	DisplayName string
}

// Link is a one-time submission link for one index case.
type Link struct {
	// URL is https://<label>.<member>.<network>/#<secret>: give it to the
	// citizen only (letter, SMS). The fragment is the secret: do not log
	// or store the URL; keep Label and MessageID.
	URL string `json:"url"`
	// Label is the link's public routing label, the reference the
	// citizen sees.
	Label string `json:"label"`
	// MessageID is the id the submission arrives with, from "anonymous".
	MessageID MessageID `json:"message_id"`
	// Service is the service the submission arrives as.
	Service string `json:"service"`
	// Expires is when the link stops working.
	Expires time.Time `json:"expires"`
}

// Link asks a health office's endpoint server (with one-time links
// configured) for a link for one index case (the _link method). The
// citizen's submission arrives later as a notification from "anonymous"
// for Link.Service, with Link.MessageID.
func (c *Client) Link(ctx context.Context, opts LinkOptions) (*Link, error) {
	p := map[string]any{}
	if opts.TTL > 0 {
		p["ttl_seconds"] = int64((opts.TTL + time.Second - 1) / time.Second)
	}
	if opts.DisplayName != "" {
		p["display_name"] = opts.DisplayName
	}
	var l Link
	if err := c.call(ctx, "_link", p, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Unlink withdraws a link before it is used or expires (_unlink).
func (c *Client) Unlink(ctx context.Context, label string) error {
	return c.call(ctx, "_unlink", map[string]string{"label": label}, nil)
}
