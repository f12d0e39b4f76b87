//! CRC-16/X-25 (§1.4): reflected polynomial 0x8408, init 0xFFFF, output
//! inverted. The final value goes on the wire most significant byte first.

const fn make_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i: u16 = 0;
    while i < 256 {
        let mut crc = i;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i as usize] = crc;
        i += 1;
    }
    table
}

static TABLE: [u16; 256] = make_table();

/// Running CRC state, for data that arrives in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Crc16(u16);

impl Default for Crc16 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc16 {
    /// A fresh state (0xFFFF).
    pub fn new() -> Self {
        Crc16(0xFFFF)
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut crc = self.0;
        for &b in data {
            crc = (crc >> 8) ^ TABLE[usize::from((crc ^ u16::from(b)) & 0xFF)];
        }
        self.0 = crc;
    }

    /// The final, inverted value.
    pub fn finish(self) -> u16 {
        !self.0
    }
}

/// CRC-16/X-25 of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut c = Crc16::new();
    c.update(data);
    c.finish()
}

/// CRC-16/X-25 of the concatenation of `parts`.
pub fn crc16_parts(parts: &[&[u8]]) -> u16 {
    let mut c = Crc16::new();
    for p in parts {
        c.update(p);
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc16(b"123456789"), 0x906E);
        assert_eq!(crc16_parts(&[b"1234", b"56789"]), 0x906E);
        assert_ne!(crc16(b"123456788"), 0x906E);
    }
}
