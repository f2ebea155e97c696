//! Rust enums for the contracts' Solidity enums, and the VM lifecycle state the orchestrator
//! keeps: the one definition of each that the services, the node agent and the CLI share.
//!
//! ABI JSON has no enums (they are `uint8` there), so the generated bindings carry them as `u8`
//! in struct fields and arguments. These enums give them names, in the order the contracts
//! declare them, and convert both ways (`u8::from(QualityTier::Standard)`,
//! `LeaseStatus::try_from(lease.status)`). In JSON (the node agent protocol, stored specs, the
//! orchestrator's API) and in the orchestrator's database they are snake_case names:
//! `"dedicated"`, `"burstable"` ([`QualityTier::as_str`], `str::parse`).

use crate::bindings::{lease_escrow::ILeaseEscrow, node_registry::INodeRegistry};

use std::{fmt, str::FromStr};

/// A name that is not a variant of the enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {name}")]
pub struct InvalidEnumName {
    /// The enum's name.
    pub name: &'static str,
    /// The name found.
    pub value: String,
}

/// Stable snake_case names, `Display`, `FromStr`, and comparison with a name, for an enum
/// whose serde names are the same strings.
macro_rules! named_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Stable snake_case name, as in JSON and in the orchestrator's database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidEnumName;
            fn from_str(s: &str) -> Result<Self, InvalidEnumName> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(InvalidEnumName { name: stringify!($name), value: s.to_string() }),
                }
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

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
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

named_enum!(QualityTier { Dedicated => "dedicated", Standard => "standard", Balanced => "balanced", Burstable => "burstable" });
named_enum!(BandwidthTier { Basic => "basic", Standard => "standard", Performance => "performance", Unmetered => "unmetered" });
named_enum!(LeaseStatus { None => "none", Active => "active", Closed => "closed", Terminated => "terminated" });
named_enum!(NodeStatus { None => "none", Active => "active", Paused => "paused", Retired => "retired" });
named_enum!(Architecture { X86_64 => "x86_64", Aarch64 => "aarch64", Riscv64 => "riscv64" });

/// Lifecycle state of a VM as the orchestrator tracks it (the node's own view of its domain is
/// [`crate::agent_protocol::VmState`]): Pending → Provisioning → Running → Stopping →
/// Stopped/Terminated, and Failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Recorded from the lease; nothing asked of the node yet.
    Pending,
    /// The node was asked to create or start the VM.
    Provisioning,
    /// The node reports it running.
    Running,
    /// The node was asked to stop or delete the VM.
    Stopping,
    /// Stopped on the node, disks kept (a paused lease).
    Stopped,
    /// Deleted for good. Final.
    Terminated,
    /// Could not be placed or the node could not run it.
    Failed,
}

named_enum!(VmState {
    Pending => "pending",
    Provisioning => "provisioning",
    Running => "running",
    Stopping => "stopping",
    Stopped => "stopped",
    Terminated => "terminated",
    Failed => "failed",
});

impl VmState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Provisioning,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Terminated,
        Self::Failed,
    ];

    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_become(self, to: Self) -> bool {
        use VmState::*;
        matches!(
            (self, to),
            (Pending, Provisioning | Terminated | Failed)
                | (Provisioning, Running | Stopping | Failed)
                | (Running, Stopping | Failed)
                | (Stopping, Stopped | Terminated | Failed)
                | (Stopped, Provisioning | Stopping)
                | (Failed, Provisioning | Stopping | Terminated)
        )
    }

    /// Whether a VM in this state no longer holds capacity on its node.
    pub fn is_released(self) -> bool {
        matches!(self, Self::Terminated | Self::Failed)
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

    #[test]
    fn names_are_the_json_names_and_parse_back() {
        fn check<T>(all: &[T])
        where
            T: Copy
                + fmt::Debug
                + PartialEq
                + serde::Serialize
                + FromStr<Err = InvalidEnumName>
                + fmt::Display,
        {
            for v in all {
                let json = serde_json::to_value(v).unwrap();
                assert_eq!(json.as_str(), Some(v.to_string().as_str()), "{v:?}");
                assert_eq!(v.to_string().parse::<T>().unwrap(), *v);
            }
        }
        check(&[
            QualityTier::Dedicated,
            QualityTier::Standard,
            QualityTier::Balanced,
            QualityTier::Burstable,
        ]);
        check(&[
            BandwidthTier::Basic,
            BandwidthTier::Standard,
            BandwidthTier::Performance,
            BandwidthTier::Unmetered,
        ]);
        check(&[
            LeaseStatus::None,
            LeaseStatus::Active,
            LeaseStatus::Closed,
            LeaseStatus::Terminated,
        ]);
        check(&[
            NodeStatus::None,
            NodeStatus::Active,
            NodeStatus::Paused,
            NodeStatus::Retired,
        ]);
        check(&[
            Architecture::X86_64,
            Architecture::Aarch64,
            Architecture::Riscv64,
        ]);
        check(&VmState::ALL);
        let err = "sleeping".parse::<VmState>().unwrap_err();
        assert_eq!(err.to_string(), "\"sleeping\" is not a valid VmState");
        assert!(VmState::Running == "running" && VmState::Running != "stopped");
    }

    #[test]
    fn only_released_vms_give_their_capacity_back() {
        let released: Vec<VmState> = VmState::ALL
            .into_iter()
            .filter(|s| s.is_released())
            .collect();
        assert_eq!(released, [VmState::Terminated, VmState::Failed]);
    }
}
