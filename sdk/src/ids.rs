//! Typed identifiers, parsed once where they enter a program (an HTTP path, a CLI argument, a
//! database row, a chain event) and carried as types from there on, so that no layer compares
//! differently spelled strings or re-parses an id it was handed.
//!
//! Each type has one canonical text form, which is what [`Display`](fmt::Display), serde and the
//! stores use:
//!
//! | type | on chain | canonical text |
//! |---|---|---|
//! | [`NodeId`] | `bytes32` | `0x` + 64 lower-case hex digits |
//! | [`LeaseId`] | `uint256` counter | decimal, e.g. `17` |
//! | [`TemplateId`] | `uint256` counter | decimal, e.g. `3` |
//! | [`VmId`] | one VM per lease | `vm-<lease id>`, e.g. `vm-17` |
//!
//! Parsing accepts any letter case for hex digits (addresses and ids are often pasted in mixed
//! case) and leading zeros in decimal ids; everything else is refused with an [`IdError`] naming
//! the kind of id and the input.

use alloy::primitives::{B256, U256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, str::FromStr};

/// An id that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {expected}")]
pub struct IdError {
    /// Which kind of id was expected ("node id", "lease id", …).
    pub kind: &'static str,
    /// The refused input, as given.
    pub input: String,
    /// What a valid id of this kind looks like.
    pub expected: &'static str,
}

/// Parses a decimal `uint256` with no sign, no prefix and no separators.
fn parse_decimal(s: &str, kind: &'static str) -> Result<U256, IdError> {
    let error = || IdError {
        kind,
        input: s.to_owned(),
        expected: "expected a decimal number",
    };
    // `from_str_radix` tolerates an empty string and `_` separators; an id has neither.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error());
    }
    U256::from_str_radix(s, 10).map_err(|_| error())
}

/// Serde through the canonical text form, so that JSON carries ids as strings exactly as the API
/// always has.
macro_rules! serde_via_text {
    ($ty:ident, $example:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .examples([$example])
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $ty {}
    };
}

/// A node's id: `keccak256(machineId, operator)` as registered in `NodeRegistry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(B256);

impl NodeId {
    /// The id as the contracts take it.
    pub const fn as_b256(&self) -> B256 {
        self.0
    }
}

impl From<B256> for NodeId {
    fn from(id: B256) -> Self {
        Self(id)
    }
}

impl From<NodeId> for B256 {
    fn from(id: NodeId) -> Self {
        id.0
    }
}

impl FromStr for NodeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let error = || IdError {
            kind: "node id",
            input: s.to_owned(),
            expected: "expected 0x followed by 64 hex digits",
        };
        let hex = s.strip_prefix("0x").ok_or_else(error)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(error());
        }
        hex.parse::<B256>().map(Self).map_err(|_| error())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // B256's Display is 0x + lower-case hex, the canonical form.
        write!(f, "{}", self.0)
    }
}

serde_via_text!(
    NodeId,
    "0x5c3f0d5e2b1a9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706"
);

/// Defines a `uint256` counter id of a contract (leases, templates).
macro_rules! counter_id {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(U256);

        impl $ty {
            /// The id as the contracts take it.
            pub const fn as_u256(&self) -> U256 {
                self.0
            }
        }

        impl From<U256> for $ty {
            fn from(id: U256) -> Self {
                Self(id)
            }
        }

        impl From<u64> for $ty {
            fn from(id: u64) -> Self {
                Self(U256::from(id))
            }
        }

        impl From<$ty> for U256 {
            fn from(id: $ty) -> Self {
                id.0
            }
        }

        impl FromStr for $ty {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_decimal(s, $kind).map(Self)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // U256's Display is decimal without padding, the canonical form.
                write!(f, "{}", self.0)
            }
        }

        serde_via_text!($ty, $example);
    };
}

counter_id!(
    /// A lease's id in `LeaseManager` (a counter starting at 1).
    LeaseId,
    "lease id",
    "17"
);

counter_id!(
    /// A template's id in `TemplateRegistry` (a counter starting at 1).
    TemplateId,
    "template id",
    "3"
);

/// A VM's id. Each lease runs exactly one VM, so the id is the lease's: `vm-<lease id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(LeaseId);

impl VmId {
    const PREFIX: &'static str = "vm-";

    /// The VM that runs lease `lease`.
    pub const fn for_lease(lease: LeaseId) -> Self {
        Self(lease)
    }

    /// The lease this VM runs.
    pub const fn lease(&self) -> LeaseId {
        self.0
    }
}

impl FromStr for VmId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let error = || IdError {
            kind: "vm id",
            input: s.to_owned(),
            expected: "expected vm- followed by a decimal lease id",
        };
        let lease = s.strip_prefix(Self::PREFIX).ok_or_else(error)?;
        parse_decimal(lease, "vm id")
            .map(|id| Self(LeaseId(id)))
            .map_err(|_| error())
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

serde_via_text!(VmId, "vm-17");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NODE: &str = "0x00000000000000000000000000000000000000000000000000000000000000ab";

    #[test]
    fn node_id_parses_any_case_and_prints_lower_case() {
        let lower: NodeId = NODE.parse().unwrap();
        let upper: NodeId = NODE.replace("ab", "AB").parse().unwrap();
        assert_eq!(lower, upper);
        assert_eq!(upper.to_string(), NODE);
        assert_eq!(lower.as_b256(), B256::with_last_byte(0xab));
        assert_eq!(NodeId::from(B256::with_last_byte(0xab)), lower);
    }

    #[test]
    fn node_id_refuses_malformed_input_naming_kind_and_input() {
        for bad in [
            "",
            "0x",
            "ab",
            // No prefix: the canonical form always has one.
            &NODE[2..],
            // 63 and 65 digits.
            &NODE[..65],
            &format!("{NODE}0"),
            &NODE.replace("ab", "zz"),
            &format!(" {NODE}"),
            "0X00000000000000000000000000000000000000000000000000000000000000ab",
        ] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert_eq!(err.kind, "node id");
            assert_eq!(err.input, bad);
            let message = err.to_string();
            assert!(message.starts_with("invalid node id"), "{message}");
            assert!(message.contains(&format!("{bad:?}")), "{message}");
        }
    }

    #[test]
    fn counter_ids_parse_decimal_only() {
        assert_eq!("17".parse::<LeaseId>().unwrap(), LeaseId::from(17));
        assert_eq!("0017".parse::<LeaseId>().unwrap().to_string(), "17");
        let max = U256::MAX.to_string();
        assert_eq!(max.parse::<TemplateId>().unwrap().as_u256(), U256::MAX);
        for bad in [
            "",
            "-1",
            "+1",
            "1_000",
            "0x11",
            "1.5",
            " 1",
            "abc",
            &format!("{max}0"),
        ] {
            let err = bad.parse::<LeaseId>().unwrap_err();
            assert_eq!((err.kind, err.input.as_str()), ("lease id", bad));
            let err = bad.parse::<TemplateId>().unwrap_err();
            assert!(err.to_string().starts_with("invalid template id"), "{err}");
        }
    }

    #[test]
    fn vm_id_is_the_lease_id_behind_a_prefix() {
        let vm = VmId::for_lease(LeaseId::from(17));
        assert_eq!(vm.to_string(), "vm-17");
        assert_eq!("vm-17".parse::<VmId>().unwrap(), vm);
        assert_eq!(vm.lease(), LeaseId::from(17));
        for bad in [
            "", "vm-", "17", "vm-x", "VM-17", "vm--1", "vm-0x11", "vm-17 ",
        ] {
            let err = bad.parse::<VmId>().unwrap_err();
            assert_eq!((err.kind, err.input.as_str()), ("vm id", bad));
        }
    }

    #[test]
    fn json_is_the_canonical_string() {
        let node: NodeId = NODE.to_uppercase().replace("0X", "0x").parse().unwrap();
        assert_eq!(serde_json::to_value(node).unwrap(), serde_json::json!(NODE));
        assert_eq!(
            serde_json::to_value(LeaseId::from(5)).unwrap(),
            serde_json::json!("5")
        );
        assert_eq!(
            serde_json::to_value(TemplateId::from(3)).unwrap(),
            serde_json::json!("3")
        );
        assert_eq!(
            serde_json::to_value(VmId::for_lease(5.into())).unwrap(),
            serde_json::json!("vm-5")
        );
        // The same JSON as the B256 the agent protocol used to carry.
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            serde_json::to_string(&node.as_b256()).unwrap()
        );
    }

    #[test]
    fn json_refuses_malformed_ids_and_numbers() {
        let err = serde_json::from_str::<NodeId>("\"0x12\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid node id \"0x12\""), "{err}");
        // Ids have always been strings on the wire; a bare number is not one.
        assert!(serde_json::from_str::<LeaseId>("5").is_err());
        assert!(serde_json::from_str::<VmId>("\"lease-5\"").is_err());
    }

    proptest! {
        #[test]
        fn node_id_round_trips_through_text_and_json(bytes in any::<[u8; 32]>()) {
            let id = NodeId::from(B256::from(bytes));
            prop_assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
            prop_assert_eq!(id.to_string().to_uppercase().replacen("0X", "0x", 1).parse::<NodeId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        }

        #[test]
        fn counter_ids_round_trip_through_text_and_json(limbs in any::<[u64; 4]>()) {
            let lease = LeaseId::from(U256::from_limbs(limbs));
            prop_assert_eq!(lease.to_string().parse::<LeaseId>().unwrap(), lease);
            let vm = VmId::for_lease(lease);
            prop_assert_eq!(vm.to_string().parse::<VmId>().unwrap(), vm);
            let json = serde_json::to_string(&vm).unwrap();
            prop_assert_eq!(serde_json::from_str::<VmId>(&json).unwrap(), vm);
            let template = TemplateId::from(U256::from_limbs(limbs));
            prop_assert_eq!(serde_json::from_str::<TemplateId>(&serde_json::to_string(&template).unwrap()).unwrap(), template);
        }
    }
}
