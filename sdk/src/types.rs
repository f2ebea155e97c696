//! Rust enums for the contracts' Solidity enums.
//!
//! ABI JSON has no enums (they are `uint8` there), so the generated bindings carry them as `u8`
//! in struct fields and arguments. These enums give them names, in the order the contracts
//! declare them, and convert both ways (`u8::from(QualityTier::Standard)`,
//! `LeaseStatus::try_from(lease.status)`). In JSON (the node agent protocol, stored specs) they
//! are snake_case names: `"dedicated"`, `"burstable"`.

use crate::bindings::{lease_escrow::ILeaseEscrow, node_registry::INodeRegistry};

/// A value that is not a variant of the enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a valid {name}")]
pub struct InvalidEnumValue {
    /// The enum's name.
    pub name: &'static str,
    /// The value found.
    pub value: u8,
}

macro_rules! sol_enum {
    ($(#[$meta:meta])* $name:ident => $binding:ty { $($(#[$vmeta:meta])* $variant:ident = $value:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value),+
        }

        impl From<$name> for $binding {
            fn from(value: $name) -> Self {
                <$binding>::from(value as u8)
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> Self {
                value as u8
            }
        }

        impl TryFrom<u8> for $name {
            type Error = InvalidEnumValue;
            fn try_from(value: u8) -> Result<Self, InvalidEnumValue> {
                match value {
                    $($value => Ok(Self::$variant),)+
                    _ => Err(InvalidEnumValue { name: stringify!($name), value }),
                }
            }
        }

        impl TryFrom<$binding> for $name {
            type Error = InvalidEnumValue;
            fn try_from(value: $binding) -> Result<Self, InvalidEnumValue> {
                Self::try_from(value.into_underlying())
            }
        }
    };
}

sol_enum! {
    /// CPU overcommit class of a lease.
    QualityTier => ILeaseEscrow::QualityTier {
        /// 1:1.
        Dedicated = 0,
        /// 1.5:1.
        Standard = 1,
        /// 2:1.
        Balanced = 2,
        /// 4:1.
        Burstable = 3,
    }
}

sol_enum! {
    /// Bandwidth class of a lease.
    BandwidthTier => ILeaseEscrow::BandwidthTier {
        /// 10 Mbps.
        Basic = 0,
        /// 50 Mbps.
        Standard = 1,
        /// 200 Mbps.
        Performance = 2,
        /// No cap.
        Unmetered = 3,
    }
}

sol_enum! {
    /// Lifecycle of a lease.
    LeaseStatus => ILeaseEscrow::LeaseStatus {
        /// No such lease.
        None = 0,
        /// Accruing.
        Active = 1,
        /// Closed by its tenant.
        Closed = 2,
        /// Terminated by the arbiter for a failed node.
        Terminated = 3,
    }
}

sol_enum! {
    /// Lifecycle of a node.
    NodeStatus => INodeRegistry::NodeStatus {
        /// No such node.
        None = 0,
        /// Takes leases.
        Active = 1,
        /// Takes no new leases.
        Paused = 2,
        /// Gone for good.
        Retired = 3,
    }
}

sol_enum! {
    /// CPU architecture of a node.
    Architecture => INodeRegistry::Architecture {
        /// x86-64.
        X86_64 = 0,
        /// 64-bit ARM.
        Aarch64 = 1,
        /// 64-bit RISC-V.
        Riscv64 = 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_bindings() {
        for tier in [
            QualityTier::Dedicated,
            QualityTier::Standard,
            QualityTier::Balanced,
            QualityTier::Burstable,
        ] {
            let binding: ILeaseEscrow::QualityTier = tier.into();
            assert_eq!(QualityTier::try_from(binding).unwrap(), tier);
        }
        assert_eq!(
            ILeaseEscrow::BandwidthTier::from(BandwidthTier::Unmetered).into_underlying(),
            3
        );
        assert_eq!(LeaseStatus::try_from(2u8).unwrap(), LeaseStatus::Closed);
        assert_eq!(
            NodeStatus::try_from(INodeRegistry::NodeStatus::from(3u8)).unwrap(),
            NodeStatus::Retired
        );
        let err = Architecture::try_from(3u8).unwrap_err();
        assert_eq!(err.to_string(), "3 is not a valid Architecture");
    }

    #[test]
    fn json_names_are_the_node_agent_protocol_s() {
        assert_eq!(
            serde_json::to_string(&QualityTier::Burstable).unwrap(),
            "\"burstable\""
        );
        assert_eq!(
            serde_json::from_str::<BandwidthTier>("\"performance\"").unwrap(),
            BandwidthTier::Performance
        );
        assert!(serde_json::from_str::<QualityTier>("\"premium\"").is_err());
    }
}
