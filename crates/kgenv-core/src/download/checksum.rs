//! Checksums a download server announces, and CRC32C arithmetic that lets chunks fetched
//! in any order be combined into the whole file's checksum without reading it again.
//!
//! Google Cloud Storage (where Kaggle's signed URLs point) sends
//! `x-goog-hash: crc32c=<base64>,md5=<base64>` with every response, ranged or not, for the
//! whole object. kgenv verifies the CRC32C: it is computed per chunk while the bytes stream
//! in and combined in file order at the end.

use base64::Engine;
use reqwest::header::HeaderMap;

/// The whole object's checksums, as announced by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Announced {
    /// CRC32C (Castagnoli) of the whole object.
    pub crc32c: Option<u32>,
}

impl Announced {
    /// Reads `x-goog-hash` headers (several may be present, each a comma-separated list).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        for value in headers.get_all("x-goog-hash") {
            let Ok(text) = value.to_str() else { continue };
            for part in text.split(',') {
                let part = part.trim();
                if let Some(b64) = part.strip_prefix("crc32c=") {
                    out.crc32c = decode_crc32c(b64);
                }
            }
        }
        out
    }
}

/// Decodes GCS's base64 big-endian CRC32C.
pub fn decode_crc32c(b64: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// Encodes a CRC32C the way GCS writes it (base64 of the big-endian bytes).
pub fn encode_crc32c(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// CRC32C of `a` followed by `b`, where `b` is `len_b` bytes long.
pub fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    // crc32c_combine takes usize; chunk lengths always fit on 64-bit hosts.
    crc32c::crc32c_combine(crc_a, crc_b, usize::try_from(len_b).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_matches_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = data.split_at(37_000);
        let whole = crc32c::crc32c(&data);
        assert_eq!(
            combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64),
            whole
        );
        assert_ne!(
            combine(crc32c::crc32c(b), crc32c::crc32c(a), a.len() as u64),
            whole
        );
    }

    #[test]
    fn parses_goog_hash() {
        let mut h = HeaderMap::new();
        h.append("x-goog-hash", "crc32c=n03x6A==".parse().expect("header"));
        h.append(
            "x-goog-hash",
            "md5=Ojk9c3dhfxgoKVVHYwFbHQ==".parse().expect("header"),
        );
        assert_eq!(Announced::from_headers(&h).crc32c, Some(0x9f4df1e8));
        assert_eq!(encode_crc32c(0x9f4df1e8), "n03x6A==");
        assert_eq!(Announced::from_headers(&HeaderMap::new()).crc32c, None);
    }
}
