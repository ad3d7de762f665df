//! `hubble watch peers` output: one line per Peer ChangeNotification as Hubble's CLI prints
//! it, the type padded to 12 columns, the address and the name, then ` (TLS.ServerName: …)`
//! when the peer speaks TLS.

use std::io::{self, Write};

use hubble_api::peer::{ChangeNotification, ChangeNotificationType};

/// Writes `c` as one line.
pub fn write_change<W: Write + ?Sized>(w: &mut W, c: &ChangeNotification) -> io::Result<()> {
    // An enum value this side does not know prints as its number, as Go's String() does.
    let kind = ChangeNotificationType::try_from(c.r#type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| c.r#type.to_string());
    write!(w, "{kind:<12} {} {}", c.address, c.name)?;
    if let Some(tls) = &c.tls {
        write!(w, " (TLS.ServerName: {})", tls.server_name)?;
    }
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubble_api::peer::Tls;

    fn line(c: &ChangeNotification) -> String {
        let mut out = Vec::new();
        write_change(&mut out, c).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_as_hubble_prints_them() {
        let mut c = ChangeNotification {
            name: "foo.bar".into(),
            address: "1.2.3.4".into(),
            r#type: ChangeNotificationType::PeerAdded as i32,
            tls: Some(Tls {
                server_name: "tls.foo.bar".into(),
            }),
        };
        assert_eq!(
            line(&c),
            "PEER_ADDED   1.2.3.4 foo.bar (TLS.ServerName: tls.foo.bar)\n"
        );
        c.tls = None;
        assert_eq!(line(&c), "PEER_ADDED   1.2.3.4 foo.bar\n");
        assert_eq!(line(&ChangeNotification::default()), "UNKNOWN       \n");
        c.r#type = 7;
        assert_eq!(line(&c), "7            1.2.3.4 foo.bar\n");
    }
}
