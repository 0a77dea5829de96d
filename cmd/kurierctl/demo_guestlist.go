package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/guestlist"
	"github.com/kurier-net/kurier/eps/locations"
	"github.com/kurier-net/kurier/eps/sdk"
)

// startIndex runs the location index as the index member's software.
func (d *demo) startIndex(idx *node) error {
	ix, err := locations.Open(locations.Config{Path: filepath.Join(idx.st.Dir, "locations.db"), Client: idx.api, Logger: d.log})
	if err != nil {
		return err
	}
	d.defer_(func() { ix.Close() })
	ix.Register(idx.mux)
	return nil
}

// guestList runs the first flow: the vendor publishes a location, the
// office finds it and requests the guest list for a time window; the
// vendor's software answers with the list sealed to that request's own
// key; receipts on both sides; the office closes the request, and aborts a
// second one.
func (d *demo) guestList(ctx context.Context, office, vendor *node) error {
	// The vendor's software: its check-ins, and the guest-list service.
	now := time.Now().UTC().Truncate(time.Minute)
	loc := contactdata.Location{
		ID: "cafe-rot-1", Name: "Café Rot", Context: "Restaurant",
		Contact: contactdata.LocationContact{
			OfficialName: "Café Rot GmbH", Phone: "+49 30 1234567",
			Address: contactdata.Address{Street: "Musterstraße", HouseNumber: "1", ZipCode: "10115", City: "Berlin"},
		},
	}
	checkins := []contactdata.Guest{
		{FirstName: "Erika", LastName: "Mustermann", Phone: "+49 30 7654321", Attendance: contactdata.Attendance{From: now.Add(-150 * time.Minute), To: now.Add(-90 * time.Minute)}},
		{FirstName: "Max", LastName: "Mustermann", Email: "max@example.de", Attendance: contactdata.Attendance{From: now.Add(-150 * time.Minute), To: now.Add(-90 * time.Minute)}},
		{FirstName: "Jürgen", LastName: "Groß", MobilePhone: "+49 170 1234567", Attendance: contactdata.Attendance{From: now.Add(-5 * time.Hour), To: now.Add(-4 * time.Hour)}},
	}
	notified := make(chan *guestlist.VendorRecord, 4)
	v, err := guestlist.OpenVendor(guestlist.VendorConfig{
		Client: vendor.api, Path: filepath.Join(vendor.st.Dir, "guestlist-vendor.db"), Logger: d.log,
		HasLocation: func(_ context.Context, id string) (bool, error) { return id == loc.ID, nil },
		Guests: func(_ context.Context, r *guestlist.Incoming) ([]contactdata.Guest, error) {
			var out []contactdata.Guest
			for _, g := range checkins {
				if g.Attendance.From.Before(r.Request.End) && g.Attendance.To.After(r.Request.Start) {
					out = append(out, g)
				}
			}
			d.step("vendor-sw", "request %s from %s for %s, %s–%s: %d of %d check-ins in the window, sealed to the request's own key",
				r.Request.ID[:8], r.Office, r.Request.LocationID, r.Request.Start.Format("15:04"), r.Request.End.Format("15:04 UTC"), len(out), len(checkins))
			return out, nil
		},
		Notified: func(_ context.Context, r *guestlist.VendorRecord) error {
			notified <- r
			return nil
		},
	})
	if err != nil {
		return err
	}
	d.defer_(func() { v.CloseStore() })
	v.Register(vendor.mux)

	updated := make(chan *guestlist.Record, 4)
	o, err := guestlist.OpenOffice(guestlist.OfficeConfig{
		Client: office.api, Path: filepath.Join(office.st.Dir, "guestlist-office.db"), Logger: d.log,
		Updated: func(r *guestlist.Record) { updated <- r },
	})
	if err != nil {
		return err
	}
	d.defer_(func() { o.CloseStore() })
	o.Register(office.mux)

	// Publish and search.
	t0 := time.Now()
	put, err := sdk.Call[locations.PutResult](ctx, vendor.api, "index", locations.ServiceLocations,
		map[string]any{"op": "put", "location": loc, "provider": "vendor-b"})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	d.step("vendor-sw", "index.locations put %q: created %v, owner %s (the verified caller; the forged \"provider\" field is ignored) (%v)",
		loc.Name, put.Created, put.Provider, time.Since(t0).Round(time.Microsecond))
	t0 = time.Now()
	found, err := sdk.Call[locations.Result](ctx, office.api, "index", locations.ServiceSearch, map[string]any{"text": "cafe rot berlin"})
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	if len(found.Locations) != 1 {
		return fmt.Errorf("search found %d locations, want 1", len(found.Locations))
	}
	hit := found.Locations[0]
	d.step("office-sw", "index.location-search \"cafe rot berlin\": %s at %s (%s, %s %s) (%v)",
		hit.Location.Name, hit.Provider, hit.Location.Contact.Address.Street, hit.Location.Contact.Address.ZipCode, hit.Location.Contact.Address.City,
		time.Since(t0).Round(time.Microsecond))
	if _, err := sdk.Call[locations.Result](ctx, vendor.api, "index", locations.ServiceSearch, map[string]any{"text": "cafe"}); err != nil {
		d.step("vendor-sw", "index.location-search as a provider: refused (%s)", shortErr(err))
	} else {
		return errors.New("a provider searched the location index")
	}

	// The request.
	t0 = time.Now()
	rec, err := o.Request(ctx, guestlist.RequestOptions{
		Provider: hit.Provider, LocationID: hit.Location.ID, Start: now.Add(-3 * time.Hour), End: now.Add(-time.Hour), Reference: "A-2026-0017",
	})
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	id := rec.Request.ID
	d.step("office-sw", "guest-list request %s to %s: %s, window %s–%s, own ML-KEM-768+X25519 key (%v)",
		id[:8], rec.Request.Provider, rec.Request.Status, rec.Request.Start.Format("15:04"), rec.Request.End.Format("15:04 UTC"), time.Since(t0).Round(time.Microsecond))
	select {
	case r := <-updated:
		if r.Request.Status != contactdata.StatusDataReceived || r.GuestList == nil {
			return fmt.Errorf("request %s: %s, refusal %v", id, r.Request.Status, r.Refusal)
		}
		names := ""
		for i, g := range r.GuestList.Guests {
			if i > 0 {
				names += ", "
			}
			names += g.FirstName + " " + g.LastName
		}
		d.step("office-sw", "%s: %d guests (%s), opened with the request's key, checked against the window (%v after the request)",
			r.Request.Status, len(r.GuestList.Guests), names, time.Since(t0).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		return errors.New("no guest list within 20s")
	case <-ctx.Done():
		return ctx.Err()
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	delivered, err := o.WaitDelivered(wctx, id)
	if err != nil {
		return err
	}
	r1, err := delivered.RequestReceipt()
	if err != nil || r1 == nil {
		return fmt.Errorf("no receipt for the request: %v", err)
	}
	vrec, err := v.WaitDelivered(wctx, "hd-1", id)
	if err != nil {
		return err
	}
	r2, err := vrec.ResponseReceipt()
	if err != nil || r2 == nil {
		return fmt.Errorf("no receipt for the guest list: %v", err)
	}
	d.step("receipts", "office holds %s's signed receipt for the request (%s); vendor holds %s's for the guest list (%s)",
		r1.To, r1.ReceivedAt.Format("15:04:05.000"), r2.To, r2.ReceivedAt.Format("15:04:05.000"))

	// Close it; abort a second one. Both reach the vendor.
	if _, err := o.Close(ctx, id); err != nil {
		return err
	}
	second, err := o.Request(ctx, guestlist.RequestOptions{
		Provider: hit.Provider, LocationID: hit.Location.ID, Start: now.Add(-2 * time.Hour), End: now.Add(-time.Hour), Reference: "A-2026-0018",
	})
	if err != nil {
		return err
	}
	if _, err := o.WaitDelivered(wctx, second.Request.ID); err != nil {
		return err
	}
	if _, err := o.Abort(ctx, second.Request.ID, "case closed: the index case was not at the location"); err != nil {
		return err
	}
	for range 2 {
		select {
		case r := <-notified:
			d.step("vendor-sw", "request %s: %s by %s%s", r.Request.ID[:8], r.Status, r.Office, reasonSuffix(r.Reason))
		case <-time.After(20 * time.Second):
			return errors.New("close and abort did not reach the vendor within 20s")
		}
	}
	return nil
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", r)
}
