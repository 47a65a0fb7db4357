//! An IPv4 address as text, written without `fmt`. Most clients' address goes into every
//! access line and into the forwarding headers of every request sent upstream;
//! `Ipv4Addr`'s `Display` pads through the formatter, a few thousand instructions each time.

/// Room for one dotted quad, on the stack; `write` fills it.
#[derive(Default)]
pub struct DottedQuad {
    text: [u8; 15],
    len: usize,
}

impl DottedQuad {
    /// `ip` as `Display` writes it, borrowed from this buffer until the next `write`.
    pub fn write(&mut self, ip: std::net::Ipv4Addr) -> &str {
        self.len = 0;
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.text[self.len] = b'.';
                self.len += 1;
            }
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(octet).as_bytes();
            self.text[self.len..self.len + digits.len()].copy_from_slice(digits);
            self.len += digits.len();
        }
        std::str::from_utf8(&self.text[..self.len]).expect("digits and dots are ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_are_written_as_they_display() {
        let mut quad = DottedQuad::default();
        for ip in [
            "0.0.0.0",
            "192.0.2.1",
            "255.255.255.255",
            "10.20.3.40",
            "1.2.3.4",
        ] {
            let ip: std::net::Ipv4Addr = ip.parse().unwrap();
            assert_eq!(quad.write(ip), ip.to_string());
        }
    }
}
