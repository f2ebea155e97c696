//! DeCloud's contract events: typed bindings generated from the committed Solidity interfaces, and
//! a generic decoder that turns any of their logs into a name and JSON arguments.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use alloy::dyn_abi::{DynSolValue, EventExt};
use alloy::json_abi::{Event, JsonAbi};
use alloy::primitives::{Address, B256};
use alloy::rpc::types::Log;
use serde_json::{Map, Value, json};

#[allow(missing_docs, clippy::too_many_arguments)]
mod bindings {
    alloy::sol!(
        #[sol(abi)]
        #[sol(all_derives)]
        "../contracts/src/interfaces/INodeRegistry.sol"
    );
    alloy::sol!(
        #[sol(abi)]
        #[sol(all_derives)]
        "../contracts/src/interfaces/IOperatorStaking.sol"
    );
    alloy::sol!(
        #[sol(abi)]
        #[sol(all_derives)]
        "../contracts/src/interfaces/ILeaseEscrow.sol"
    );
    alloy::sol!(
        #[sol(abi)]
        #[sol(all_derives)]
        "../contracts/src/interfaces/ITemplateMarket.sol"
    );
    alloy::sol!(
        #[sol(abi)]
        #[sol(all_derives)]
        "../contracts/src/interfaces/IAttestationAnchor.sol"
    );
    alloy::sol!(
        #[sol(abi)]
        #[sol(all_derives)]
        "../contracts/src/interfaces/IStorageMarket.sol"
    );
}

pub use bindings::{
    IAttestationAnchor, ILeaseEscrow, INodeRegistry, IOperatorStaking, IStorageMarket,
    ITemplateMarket,
};

/// The DeCloud contracts whose events are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContractKind {
    /// NodeRegistry.
    NodeRegistry,
    /// OperatorStaking.
    OperatorStaking,
    /// LeaseEscrow.
    LeaseEscrow,
    /// TemplateMarket.
    TemplateMarket,
    /// AttestationAnchor.
    AttestationAnchor,
    /// StorageMarket.
    StorageMarket,
}

impl ContractKind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::NodeRegistry,
        Self::OperatorStaking,
        Self::LeaseEscrow,
        Self::TemplateMarket,
        Self::AttestationAnchor,
        Self::StorageMarket,
    ];

    /// The contract's name as in `deployments/<chainId>.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NodeRegistry => "NodeRegistry",
            Self::OperatorStaking => "OperatorStaking",
            Self::LeaseEscrow => "LeaseEscrow",
            Self::TemplateMarket => "TemplateMarket",
            Self::AttestationAnchor => "AttestationAnchor",
            Self::StorageMarket => "StorageMarket",
        }
    }

    fn abi(self) -> JsonAbi {
        match self {
            Self::NodeRegistry => INodeRegistry::abi::contract(),
            Self::OperatorStaking => IOperatorStaking::abi::contract(),
            Self::LeaseEscrow => ILeaseEscrow::abi::contract(),
            Self::TemplateMarket => ITemplateMarket::abi::contract(),
            Self::AttestationAnchor => IAttestationAnchor::abi::contract(),
            Self::StorageMarket => IStorageMarket::abi::contract(),
        }
    }
}

impl fmt::Display for ContractKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContractKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown contract {s:?}"))
    }
}

/// A log decoded into its event's name and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedLog {
    /// Which contract emitted it.
    pub contract: ContractKind,
    /// The event's name, e.g. `LeaseOpened`.
    pub name: String,
    /// The arguments by name: integers as decimal strings, bytes and addresses as 0x-hex, structs as
    /// objects, enums as their integer.
    pub args: Value,
}

/// Decodes the logs of a set of DeCloud contracts. Events are looked up per contract, because two
/// contracts may declare events of the same signature (`Withdrawn`, `TreasurySet`).
#[derive(Debug, Clone)]
pub struct EventDecoder {
    contracts: HashMap<Address, ContractKind>,
    events: HashMap<(ContractKind, B256), Event>,
}

impl EventDecoder {
    /// A decoder for the given deployed addresses.
    pub fn new(contracts: impl IntoIterator<Item = (ContractKind, Address)>) -> Self {
        let contracts: HashMap<Address, ContractKind> =
            contracts.into_iter().map(|(k, a)| (a, k)).collect();
        let mut events = HashMap::new();
        for kind in ContractKind::ALL {
            for event in kind.abi().events() {
                events.insert((kind, event.selector()), event.clone());
            }
        }
        Self { contracts, events }
    }

    /// The addresses this decoder knows.
    pub fn addresses(&self) -> Vec<Address> {
        let mut a: Vec<Address> = self.contracts.keys().copied().collect();
        a.sort();
        a
    }

    /// The contract at `address`, if it is one of ours.
    pub fn contract(&self, address: Address) -> Option<ContractKind> {
        self.contracts.get(&address).copied()
    }

    /// Decodes a log; `None` for a log of another contract or an unknown event (e.g. OpenZeppelin's
    /// role events), which the indexer skips.
    pub fn decode(&self, log: &Log) -> Option<DecodedLog> {
        let contract = self.contract(log.address())?;
        let topic0 = *log.topics().first()?;
        let event = self.events.get(&(contract, topic0))?;
        let decoded = event.decode_log(&log.inner.data).ok()?;
        let mut indexed = decoded.indexed.into_iter();
        let mut body = decoded.body.into_iter();
        let mut args = Map::new();
        for input in &event.inputs {
            let value = if input.indexed {
                indexed.next()
            } else {
                body.next()
            }?;
            args.insert(input.name.clone(), to_json(&value, &input.components));
        }
        Some(DecodedLog {
            contract,
            name: event.name.clone(),
            args: Value::Object(args),
        })
    }
}

fn to_json(value: &DynSolValue, components: &[alloy::json_abi::Param]) -> Value {
    match value {
        DynSolValue::Bool(b) => json!(b),
        DynSolValue::Int(i, _) => json!(i.to_string()),
        DynSolValue::Uint(u, _) => json!(u.to_string()),
        DynSolValue::FixedBytes(w, size) => json!(format!("0x{}", hex(&w[..*size]))),
        DynSolValue::Address(a) => json!(format!("{a:#x}")),
        DynSolValue::Function(f) => json!(format!("0x{}", hex(f.as_slice()))),
        DynSolValue::Bytes(b) => json!(format!("0x{}", hex(b))),
        DynSolValue::String(s) => json!(s),
        DynSolValue::Array(items) | DynSolValue::FixedArray(items) => {
            Value::Array(items.iter().map(|v| to_json(v, components)).collect())
        }
        DynSolValue::Tuple(items) => {
            let mut map = Map::new();
            for (i, item) in items.iter().enumerate() {
                let (name, sub) = components.get(i).map_or((format!("_{i}"), &[][..]), |p| {
                    (p.name.clone(), &p.components[..])
                });
                map.insert(name, to_json(item, sub));
            }
            Value::Object(map)
        }
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{LogData, U256, address, b256};
    use alloy::sol_types::SolEvent;

    fn rpc_log(address: Address, data: LogData) -> Log {
        Log {
            inner: alloy::primitives::Log { address, data },
            block_number: Some(7),
            log_index: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_by_contract_because_signatures_collide() {
        let escrow = address!("0x00000000000000000000000000000000000000e5");
        let staking = address!("0x00000000000000000000000000000000000000a5");
        let decoder = EventDecoder::new([
            (ContractKind::LeaseEscrow, escrow),
            (ContractKind::OperatorStaking, staking),
        ]);
        let who = address!("0x1111111111111111111111111111111111111111");
        let e = ILeaseEscrow::Withdrawn {
            account: who,
            amount: U256::from(5),
            balance: U256::from(7),
        };
        let d = decoder
            .decode(&rpc_log(escrow, e.encode_log_data()))
            .unwrap();
        assert_eq!(d.contract, ContractKind::LeaseEscrow);
        assert_eq!(d.name, "Withdrawn");
        assert_eq!(
            d.args,
            json!({"account": "0x1111111111111111111111111111111111111111", "amount": "5", "balance": "7"})
        );
        let s = IOperatorStaking::Withdrawn {
            operator: who,
            requestId: U256::from(2),
            amount: U256::from(9),
        };
        let d = decoder
            .decode(&rpc_log(staking, s.encode_log_data()))
            .unwrap();
        assert_eq!(d.args["requestId"], json!("2"));
        assert!(
            decoder
                .decode(&rpc_log(Address::ZERO, s.encode_log_data()))
                .is_none()
        );
    }

    #[test]
    fn decodes_structs_by_component_name() {
        let registry = address!("0x00000000000000000000000000000000000000aa");
        let decoder = EventDecoder::new([(ContractKind::NodeRegistry, registry)]);
        let prices = INodeRegistry::Prices {
            cpuPerHour: 5_000,
            memoryGiBPerHour: 2_000,
            storageGiBPerHour: 10,
            gpuPerHour: 0,
        };
        let e = INodeRegistry::NodePricesSet {
            nodeId: b256!("0x0101010101010101010101010101010101010101010101010101010101010101"),
            requested: prices.clone(),
            stored: prices,
        };
        let d = decoder
            .decode(&rpc_log(registry, e.encode_log_data()))
            .unwrap();
        assert_eq!(d.args["stored"]["cpuPerHour"], json!("5000"));
        assert_eq!(
            d.args["nodeId"],
            json!("0x0101010101010101010101010101010101010101010101010101010101010101")
        );
    }
}
