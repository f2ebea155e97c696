//! Packing of segment bytes into BN254 scalars and conversions of scalars to bytes and hex.

use ark_bn254::Fr;
use ark_ff::{BigInteger, PrimeField};

use crate::error::{Error, Result};

/// Size of one segment, the unit a challenge opens, in bytes.
///
/// The leaf of the Merkle tree is the segment itself (its packed scalars), never a digest
/// handed in by the prover: a node that kept only digests cannot open a challenged leaf.
/// 1 KiB keeps the in-circuit leaf hash (17 Poseidon permutations) about as costly as a
/// depth-20 Merkle path (20 permutations), so neither dominates a challenge.
pub const SEGMENT_BYTES: usize = 1024;

/// Bytes packed into one scalar: 31 bytes (248 bits) always fit below the 254-bit modulus.
pub const BYTES_PER_ELEMENT: usize = 31;

/// Scalars per segment: `ceil(1024 / 31) = 34`; the last scalar holds the final byte.
pub const ELEMENTS_PER_SEGMENT: usize = SEGMENT_BYTES.div_ceil(BYTES_PER_ELEMENT);

/// Packs one segment into scalars: scalar `j` is the little-endian integer of bytes
/// `31·j .. min(31·j + 31, 1024)`. Injective, and every scalar is below 2^248.
pub fn pack_segment(segment: &[u8; SEGMENT_BYTES]) -> [Fr; ELEMENTS_PER_SEGMENT] {
    let mut out = [Fr::from(0u64); ELEMENTS_PER_SEGMENT];
    for (element, chunk) in out.iter_mut().zip(segment.chunks(BYTES_PER_ELEMENT)) {
        *element = Fr::from_le_bytes_mod_order(chunk);
    }
    out
}

/// Inverse of [`pack_segment`]; fails if a scalar does not fit its byte slot.
pub fn unpack_segment(elements: &[Fr; ELEMENTS_PER_SEGMENT]) -> Result<[u8; SEGMENT_BYTES]> {
    let mut out = [0u8; SEGMENT_BYTES];
    for (element, chunk) in elements.iter().zip(out.chunks_mut(BYTES_PER_ELEMENT)) {
        let bytes = element.into_bigint().to_bytes_le();
        if bytes[chunk.len()..].iter().any(|b| *b != 0) {
            return Err(Error::NonCanonicalScalar(fr_to_hex(element)));
        }
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    Ok(out)
}

/// Splits data into zero-padded segments of [`SEGMENT_BYTES`].
pub fn split_segments(data: &[u8]) -> Vec<[u8; SEGMENT_BYTES]> {
    data.chunks(SEGMENT_BYTES)
        .map(|chunk| {
            let mut segment = [0u8; SEGMENT_BYTES];
            segment[..chunk.len()].copy_from_slice(chunk);
            segment
        })
        .collect()
}

/// A scalar as 32 big-endian bytes, the layout of a Solidity `uint256`.
pub fn fr_to_be_bytes(value: &Fr) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&value.into_bigint().to_bytes_be());
    out
}

/// A scalar as `0x`-prefixed 64-digit hex.
pub fn fr_to_hex(value: &Fr) -> String {
    format!("0x{}", hex::encode(fr_to_be_bytes(value)))
}

/// Parses 32 big-endian bytes into a scalar, rejecting values at or above the modulus.
pub fn fr_from_be_bytes(bytes: &[u8; 32]) -> Result<Fr> {
    let value = Fr::from_be_bytes_mod_order(bytes);
    if fr_to_be_bytes(&value) != *bytes {
        return Err(Error::NonCanonicalScalar(format!(
            "0x{}",
            hex::encode(bytes)
        )));
    }
    Ok(value)
}

/// Parses `0x`-prefixed (or bare) hex of at most 32 bytes into 32 big-endian bytes.
pub fn parse_hex32(text: &str) -> Result<[u8; 32]> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let invalid = |reason: &str| Error::InvalidHex {
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    if digits.is_empty() || digits.len() > 64 {
        return Err(invalid("expected 1 to 64 hex digits"));
    }
    let padded = format!("{digits:0>64}");
    let bytes = hex::decode(padded).map_err(|e| invalid(&e.to_string()))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Parses hex into a canonical scalar.
pub fn fr_from_hex(text: &str) -> Result<Fr> {
    fr_from_be_bytes(&parse_hex32(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_constants() {
        assert_eq!(ELEMENTS_PER_SEGMENT, 34);
        assert_eq!(split_segments(&[1u8; 2049]).len(), 3);
        assert!(split_segments(&[]).is_empty());
    }

    #[test]
    fn rejects_non_canonical_scalars() {
        let modulus = Fr::MODULUS.to_bytes_be();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&modulus);
        assert!(matches!(
            fr_from_be_bytes(&bytes),
            Err(Error::NonCanonicalScalar(_))
        ));
        assert!(fr_from_hex("0xzz").is_err());
        assert!(fr_from_hex(&format!("0x{}", "1".repeat(65))).is_err());
        let mut elements = [Fr::from(0u64); ELEMENTS_PER_SEGMENT];
        elements[ELEMENTS_PER_SEGMENT - 1] = Fr::from(256u64);
        assert!(unpack_segment(&elements).is_err());
    }

    proptest! {
        #[test]
        fn pack_roundtrips(bytes in proptest::collection::vec(any::<u8>(), SEGMENT_BYTES)) {
            let segment: [u8; SEGMENT_BYTES] = bytes.try_into().unwrap();
            let packed = pack_segment(&segment);
            for element in &packed {
                prop_assert!(element.into_bigint().num_bits() <= 248);
            }
            prop_assert_eq!(unpack_segment(&packed).unwrap(), segment);
        }

        #[test]
        fn pack_is_injective(a in proptest::collection::vec(any::<u8>(), SEGMENT_BYTES), flip in 0..SEGMENT_BYTES) {
            let first: [u8; SEGMENT_BYTES] = a.try_into().unwrap();
            let mut second = first;
            second[flip] ^= 1;
            prop_assert_ne!(pack_segment(&first), pack_segment(&second));
        }

        #[test]
        fn split_then_join_restores_data(data in proptest::collection::vec(any::<u8>(), 1..5000)) {
            let joined: Vec<u8> = split_segments(&data).concat();
            prop_assert_eq!(&joined[..data.len()], &data[..]);
            prop_assert!(joined[data.len()..].iter().all(|b| *b == 0));
        }

        #[test]
        fn scalar_hex_roundtrips(bytes in proptest::array::uniform32(any::<u8>())) {
            let value = Fr::from_be_bytes_mod_order(&bytes);
            prop_assert_eq!(fr_from_hex(&fr_to_hex(&value)).unwrap(), value);
        }
    }
}
