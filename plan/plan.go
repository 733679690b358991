// Package plan turns a host's settings (config.Settings, flags already
// applied) into what the engine runs with: the spool's options, the
// sender's options and the flush configuration, for every caller (the
// flush command, serve's ETRN count and its ATRN delivery). A new per-host
// key is mapped here once, so no caller can forget it.
//
// It also finds where a host's mail goes when no route is set (its MX
// hosts without this machine) and this machine's name for EHLO.
//
// plan never opens a spool or a connection itself.
package plan

import (
	"etrnflush/config"
	"etrnflush/flush"
	"etrnflush/sender"
	"etrnflush/spool"
)

// Spool is the spool options of a host's settings.
func Spool(st config.Settings) spool.Options {
	return spool.Options{
		Path:                 st.Spool,
		Host:                 st.Host,
		Format:               st.Format,
		MailstorePrefixLines: st.MailstorePrefixLines,
		MailstoreSuffixLines: st.MailstoreSuffixLines,
		MaildirEnvelope:      st.MaildirEnvelope,
		DeliveredToPrefix:    st.DeliveredToPrefix,
	}
}

// TLSLevel maps the config's tls value onto the sender's levels. Config
// validation admits only these four words; anything else is the safe
// default, may.
func TLSLevel(s string) sender.TLSLevel {
	switch s {
	case "none":
		return sender.TLSNone
	case "encrypt":
		return sender.TLSEncrypt
	case "verify":
		return sender.TLSVerify
	}
	return sender.TLSMay
}

// Sender is the sender options of a host's settings. Helo stays "" when
// the config gives none (the caller picks this machine's name, see FQDN,
// or serve's hostname); AuthPass is the caller's to read, since only the
// caller knows whether a secret may be read at all (not in a dry run).
func Sender(st config.Settings) sender.Options {
	so := sender.Options{
		Helo:         st.Helo,
		TLS:          TLSLevel(st.TLS),
		TLSName:      st.TLSName,
		Timeout:      st.Timeout,
		DataTimeout:  st.DataTimeout,
		AuthUser:     st.AuthUser,
		MaxInflight:  st.MaxInflight,
		NoPipelining: !st.Pipelining,
		NoChunking:   !st.Chunking,
	}
	if st.EightBit == "refuse" {
		so.EightBit = sender.EightBitRefuse
	}
	if so.TLSName == "" {
		so.TLSName = st.Host
	}
	return so
}

// Flush is the flush configuration of a host's settings: spool, sender,
// coalescing, session and refusal limits, bounces, expiry and warnings,
// the archive,
// and where to connect (the route, else the host's MX hosts, looked up
// when the flush has something to send). Log, Out and the dry-run switch
// are the caller's.
func Flush(st config.Settings) flush.Config {
	fc := flush.Config{
		Host:            st.Host,
		Spool:           Spool(st),
		Sender:          Sender(st),
		NoCoalesce:      !st.Coalesce,
		MaxConnections:  st.MaxConnections,
		MaxMailRefusals: st.MaxMailRefusals,
		MaxAge:          st.MaxAge,
		WarnAge:         st.WarnAge,
		ArchiveDir:      st.ArchiveDir,
		ArchiveMaxAge:   st.ArchiveMaxAge,
	}
	if st.Bounce {
		fc.Sendmail = st.Sendmail
	}
	if st.Route != "" {
		fc.Dests = []string{WithPort(st.Route)}
	} else {
		host := st.Host
		fc.Resolve = func() ([]string, error) { return ResolveMX(host) }
	}
	return fc
}
