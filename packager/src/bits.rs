//! Bit-level reading shared by the video parameter parsers: MSB-first bits, Exp-Golomb codes
//! (ITU-T H.264 §9.1, H.265 §9.2), and RBSP extraction (emulation prevention bytes removed,
//! H.264 §7.4.1, H.265 §7.4.2).

/// Reads bits, most significant first, and Exp-Golomb codes. Every read past the end is
/// `None`.
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    /// The next `n` (at most 64) bits.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u64> {
        let mut value = 0u64;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            value = value << 1 | u64::from(byte >> (7 - self.at % 8) & 1);
            self.at += 1;
        }
        Some(value)
    }

    /// Skips `n` bits.
    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self.at.checked_add(n)?;
        (self.at <= self.data.len() * 8).then_some(())
    }

    /// ue(v).
    pub(crate) fn ue(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + self.bits(zeros)?)
    }

    /// se(v).
    pub(crate) fn se(&mut self) -> Option<i64> {
        let code = i64::try_from(self.ue()?).ok()?;
        Some(if code % 2 == 1 { (code + 1) / 2 } else { -(code / 2) })
    }
}

/// The RBSP of a NAL unit's payload: emulation prevention bytes (`00 00 03`) removed, at
/// most `limit` bytes (parameter parsers read only a header's worth).
pub(crate) fn rbsp(payload: &[u8], limit: usize) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(payload.len().min(limit));
    let mut zeros = 0;
    for &byte in payload.iter().take(limit) {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        rbsp.push(byte);
    }
    rbsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_exp_golomb_codes() {
        // 1 | 010 | 011 | 00100 | 1... : ue 0, 1, 2, 3.
        let mut bits = BitReader::new(&[0b1010_0110, 0b0100_1000]);
        assert_eq!(bits.ue(), Some(0));
        assert_eq!(bits.ue(), Some(1));
        assert_eq!(bits.ue(), Some(2));
        assert_eq!(bits.ue(), Some(3));
        assert_eq!(bits.bits(4), Some(0b1000));
        assert_eq!(bits.bits(1), None);
        let mut signed = BitReader::new(&[0b0100_1100]);
        assert_eq!((signed.se(), signed.se()), (Some(1), Some(-1)));
        assert_eq!(BitReader::new(&[0xff]).skip(9), None);
    }

    #[test]
    fn emulation_prevention_bytes_are_removed() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3], 64), [0, 0, 1, 0, 0]);
        assert_eq!(rbsp(&[1, 2, 3, 4], 2), [1, 2]);
    }
}
