//! The authoritative DNS server of the ingress domain (`[ingress] dns_listen`): each VM's name
//! `<name>.<domain>` is answered with the public address of the node running that VM, as its
//! agent last reported it, while the VM exists and is not terminated. The parent zone
//! delegates the domain to this server (NS and glue records, see the crate README).
//!
//! - `A`/`AAAA` for a held name (a `CNAME` when the node reported a DNS name instead of an IP);
//!   an empty answer (NODATA) for other types or when the node reported no address;
//! - `SOA` and `NS` at the apex; `A`/`AAAA` of the nameserver itself when it lies in the zone;
//! - NXDOMAIN for every other name under the domain, REFUSED for names outside it;
//! - FORMERR for a query that is not one question, NOTIMP for other operations; a packet that
//!   is not DNS at all gets no answer.
//!
//! Answers live `dns_ttl_secs` (30 s by default): a name's address changes when its VM's node
//! does. The wire format is hickory-proto's; the UDP and TCP loops are plain tokio.

use crate::config::IngressConfig;
use crate::store::Store;
use decloud_runtime::CancellationToken;
use hickory_proto::{
    op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, NS, SOA},
    },
    serialize::binary::{BinDecodable, BinDecoder},
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

/// Largest UDP answer for a query without EDNS (RFC 1035).
const UDP_PLAIN_LIMIT: usize = 512;
/// Largest UDP answer this server sends to an EDNS query (the DNS flag day 2020 size).
const UDP_EDNS_LIMIT: u16 = 1232;
/// How long a TCP client may take to send its next query before the connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most TCP connections served at once; more wait to be accepted.
const TCP_CONNECTIONS: usize = 64;

/// Where a name points, decided from the address of the node that runs its VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An IPv4 address: an `A` record.
    V4(Ipv4Addr),
    /// An IPv6 address: an `AAAA` record.
    V6(Ipv6Addr),
    /// A DNS name: a `CNAME` to it.
    Host(Name),
}

/// The one decision of which address a VM's name resolves to: its node's relay's public address
/// when the node is relayed (the relay's Caddy serves the name), else the public address the
/// node's agent reported (an IP, or a DNS name the name then aliases). `None` when there is none
/// or it is neither.
pub fn name_target(node_address: Option<&str>, relay_address: Option<&str>) -> Option<Target> {
    let address = relay_address.or(node_address)?.trim();
    // A bracketed IPv6 literal is how URLs write it; the address is the same.
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    match IpAddr::from_str(bare) {
        Ok(IpAddr::V4(ip)) => Some(Target::V4(ip)),
        Ok(IpAddr::V6(ip)) => Some(Target::V6(ip)),
        Err(_) => {
            let name = Name::from_ascii(address).ok()?;
            (name.num_labels() >= 2).then(|| {
                let mut name = name;
                name.set_fqdn(true);
                name
            })
        }
        .map(Target::Host),
    }
}

/// The zone this server is authoritative for, built once from `[ingress]`.
#[derive(Clone, Debug)]
pub struct Zone {
    apex: Name,
    nameserver: Name,
    nameserver_addresses: Vec<IpAddr>,
    ttl: u32,
    soa: SOA,
}

/// Why the zone could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// `dns_nameserver` is missing.
    #[error("[ingress] dns_listen needs dns_nameserver")]
    NoNameserver,
    /// A name of the configuration is not a DNS name.
    #[error("{0:?} is not a DNS name: {1}")]
    BadName(String, hickory_proto::ProtoError),
}

fn fqdn(text: &str) -> Result<Name, ZoneError> {
    let mut name = Name::from_ascii(text).map_err(|e| ZoneError::BadName(text.to_string(), e))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

impl Zone {
    /// The zone of `config`'s domain, its NS `dns_nameserver`.
    pub fn new(config: &IngressConfig) -> Result<Self, ZoneError> {
        let apex = fqdn(&config.domain)?;
        let nameserver = fqdn(
            config
                .dns_nameserver
                .as_deref()
                .ok_or(ZoneError::NoNameserver)?,
        )?;
        let hostmaster = fqdn(&format!("hostmaster.{}", config.domain))?;
        let ttl = config.dns_ttl_secs;
        // The serial only matters to secondaries, which this zone has none of (its records
        // live in the database); the start time keeps it increasing across restarts.
        let serial = u32::try_from(crate::clock::now()).unwrap_or(u32::MAX);
        let refresh = i32::try_from(ttl).unwrap_or(i32::MAX);
        let soa = SOA::new(
            nameserver.clone(),
            hostmaster,
            serial,
            refresh,
            refresh,
            1_209_600,
            // Also how long resolvers remember that a name does not exist.
            ttl,
        );
        Ok(Self {
            apex,
            nameserver,
            nameserver_addresses: config.dns_nameserver_addresses.clone(),
            ttl,
            soa,
        })
    }

    fn soa_record(&self) -> Record {
        Record::from_rdata(self.apex.clone(), self.ttl, RData::SOA(self.soa.clone()))
    }

    fn ns_record(&self) -> Record {
        Record::from_rdata(
            self.apex.clone(),
            self.ttl,
            RData::NS(NS(self.nameserver.clone())),
        )
    }

    /// The nameserver's own address records, when it lies in the zone.
    fn glue(&self, name: &Name, wanted: RecordType) -> Vec<Record> {
        self.nameserver_addresses
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) if matches!(wanted, RecordType::A | RecordType::ANY) => {
                    Some(RData::A(A(*v4)))
                }
                IpAddr::V6(v6) if matches!(wanted, RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|rdata| Record::from_rdata(name.clone(), self.ttl, rdata))
            .collect()
    }
}

/// What a question under the zone finds.
enum Found {
    /// Records (possibly none: NODATA).
    Records(Vec<Record>),
    /// No such name.
    NoName,
}

/// Answers one question about a name inside the zone (`name` lowercase).
async fn lookup(
    store: &Store,
    zone: &Zone,
    name: &Name,
    wanted: RecordType,
) -> Result<Found, crate::StoreError> {
    if name == &zone.apex {
        let mut records = Vec::new();
        if matches!(wanted, RecordType::SOA | RecordType::ANY) {
            records.push(zone.soa_record());
        }
        if matches!(wanted, RecordType::NS | RecordType::ANY) {
            records.push(zone.ns_record());
        }
        return Ok(Found::Records(records));
    }
    if name == &zone.nameserver {
        return Ok(Found::Records(zone.glue(name, wanted)));
    }
    // VMs' names are one label under the domain; nothing lives deeper.
    if name.num_labels() != zone.apex.num_labels() + 1 {
        return Ok(Found::NoName);
    }
    let Some(label) = name.iter().next() else {
        return Ok(Found::NoName);
    };
    let Ok(label) = std::str::from_utf8(label) else {
        return Ok(Found::NoName);
    };
    let Some(holder) = store.ingress_holder(label).await? else {
        return Ok(Found::NoName);
    };
    let rdata = match name_target(
        holder.node_address.as_deref(),
        holder.relay_address.as_deref(),
    ) {
        Some(Target::V4(ip)) if matches!(wanted, RecordType::A | RecordType::ANY) => {
            Some(RData::A(A(ip)))
        }
        Some(Target::V6(ip)) if matches!(wanted, RecordType::AAAA | RecordType::ANY) => {
            Some(RData::AAAA(AAAA(ip)))
        }
        // An alias answers every type (RFC 1034 3.6.2).
        Some(Target::Host(host)) => Some(RData::CNAME(CNAME(host))),
        _ => None,
    };
    Ok(Found::Records(
        rdata
            .map(|r| Record::from_rdata(name.clone(), zone.ttl, r))
            .into_iter()
            .collect(),
    ))
}

/// The reply to one request, or `None` for a packet that gets none (not DNS, or a response).
/// Over UDP an answer larger than the client takes is truncated (the client retries on TCP).
async fn reply(store: &Store, zone: &Zone, packet: &[u8], over_udp: bool) -> Option<Vec<u8>> {
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => {
            // A readable header gets FORMERR, so the client stops waiting; anything less is
            // noise and gets nothing.
            let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
            if header.message_type() != MessageType::Query {
                return None;
            }
            let refusal = Message::error_msg(header.id(), header.op_code(), ResponseCode::FormErr);
            return refusal.to_vec().ok();
        }
    };
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired());
    response.add_queries(request.queries().iter().cloned());
    let limit = match request.extensions() {
        Some(edns) => {
            let mut ours = Edns::new();
            ours.set_max_payload(UDP_EDNS_LIMIT);
            response.set_edns(ours);
            usize::from(
                edns.max_payload()
                    .clamp(UDP_PLAIN_LIMIT as u16, UDP_EDNS_LIMIT),
            )
        }
        None => UDP_PLAIN_LIMIT,
    };
    let code = answer(store, zone, &request, &mut response).await;
    response.set_response_code(code);
    let bytes = response.to_vec().ok()?;
    if over_udp && bytes.len() > limit {
        // The client asks again over TCP.
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// Fills `response` for `request` and returns its response code.
async fn answer(
    store: &Store,
    zone: &Zone,
    request: &Message,
    response: &mut Message,
) -> ResponseCode {
    if request.op_code() != OpCode::Query {
        return ResponseCode::NotImp;
    }
    let [question] = request.queries() else {
        return ResponseCode::FormErr;
    };
    let name = question.name().to_lowercase();
    if !zone.apex.zone_of(&name) || !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY)
    {
        return ResponseCode::Refused;
    }
    response.set_authoritative(true);
    let wanted = question.query_type();
    if matches!(wanted, RecordType::AXFR | RecordType::IXFR) {
        // The zone lives in the database; there is nothing to transfer.
        response.set_authoritative(false);
        return ResponseCode::Refused;
    }
    match lookup(store, zone, &name, wanted).await {
        Ok(Found::Records(records)) => {
            if records.is_empty() {
                // NODATA: the SOA tells resolvers how long to remember it.
                response.add_name_server(zone.soa_record());
            } else {
                // Keep the case the client asked with (resolvers may check it, RFC draft 0x20).
                let asked = question.name().clone();
                response.add_answers(records.into_iter().map(|mut r| {
                    if r.name() == &name {
                        r.set_name(asked.clone());
                    }
                    r
                }));
                if name == zone.apex && matches!(wanted, RecordType::NS) {
                    response.add_additionals(zone.glue(&zone.nameserver, RecordType::ANY));
                }
            }
            ResponseCode::NoError
        }
        Ok(Found::NoName) => {
            response.add_name_server(zone.soa_record());
            ResponseCode::NXDomain
        }
        Err(e) => {
            tracing::warn!(target: "orchestrator::dns", error = %e, name = %name, "dns lookup failed");
            response.set_authoritative(false);
            ResponseCode::ServFail
        }
    }
}

/// A running DNS server's sockets, bound before serving so that the caller knows the port.
#[derive(Debug)]
pub struct Listeners {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Listeners {
    /// Binds UDP at `addr`, then TCP at the same address and port (the port UDP got, when
    /// `addr` asks for any port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(Self { udp, tcp })
    }

    /// Where the server listens (the same for UDP and TCP).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Serves the zone on `listeners` until `stop` is cancelled.
pub async fn serve(store: Store, zone: Zone, listeners: Listeners, stop: CancellationToken) {
    let zone = Arc::new(zone);
    let Listeners { udp, tcp } = listeners;
    tokio::join!(
        serve_udp(store.clone(), zone.clone(), udp, stop.clone()),
        serve_tcp(store, zone, tcp, stop),
    );
}

async fn serve_udp(store: Store, zone: Arc<Zone>, socket: UdpSocket, stop: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            () = stop.cancelled() => return,
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(e) => {
                    // An ICMP error of an earlier answer, for one: the socket still works.
                    tracing::debug!(target: "orchestrator::dns", error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        // Answered in turn: a lookup is one indexed query, and a flood then queues in the
        // kernel instead of in tasks.
        if let Some(answer) = reply(&store, &zone, &buf[..n], true).await
            && let Err(e) = socket.send_to(&answer, peer).await
        {
            tracing::debug!(target: "orchestrator::dns", error = %e, %peer, "udp send failed");
        }
    }
}

async fn serve_tcp(store: Store, zone: Arc<Zone>, listener: TcpListener, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            got = listener.accept() => match got {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(target: "orchestrator::dns", error = %e, "tcp accept failed");
                    continue;
                }
            },
        };
        let (store, zone, stop) = (store.clone(), zone.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                result = serve_connection(&store, &zone, stream) => {
                    if let Err(e) = result {
                        tracing::debug!(target: "orchestrator::dns", error = %e, %peer, "tcp connection ended");
                    }
                }
            }
            drop(slot);
        });
    }
}

/// Queries over one TCP connection, each behind its two-byte length (RFC 1035 4.2.2), until
/// the client closes, idles or sends something that is not DNS.
async fn serve_connection(
    store: &Store,
    zone: &Zone,
    mut stream: TcpStream,
) -> std::io::Result<()> {
    loop {
        let length = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(length)) => usize::from(length),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut packet = vec![0u8; length];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(answer) = reply(store, zone, &packet, false).await else {
            return Ok(());
        };
        let length = u16::try_from(answer.len()).map_err(std::io::Error::other)?;
        stream.write_u16(length).await?;
        stream.write_all(&answer).await?;
    }
}

/// A question as a client sends it (one query, a random id), e.g. for checking a server.
pub fn query(name: &str, wanted: RecordType) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_ascii(name)?, wanted));
    message.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_resolves_to_its_nodes_reported_address() {
        assert_eq!(
            name_target(Some("203.0.113.7"), None),
            Some(Target::V4("203.0.113.7".parse().unwrap()))
        );
        assert_eq!(
            name_target(Some("2001:db8::7"), None),
            Some(Target::V6("2001:db8::7".parse().unwrap()))
        );
        assert_eq!(
            name_target(Some("[2001:db8::7]"), None),
            Some(Target::V6("2001:db8::7".parse().unwrap()))
        );
        assert_eq!(
            name_target(Some("node7.example.net"), None),
            Some(Target::Host(
                Name::from_ascii("node7.example.net.").unwrap()
            ))
        );
        for nothing in [None, Some(""), Some("localhost"), Some("not a name")] {
            assert_eq!(name_target(nothing, None), None, "{nothing:?}");
        }
    }

    #[test]
    fn a_relayed_nodes_names_resolve_to_its_relay() {
        assert_eq!(
            name_target(Some("10.0.0.7"), Some("198.51.100.2")),
            Some(Target::V4("198.51.100.2".parse().unwrap()))
        );
        assert_eq!(
            name_target(None, Some("relay.example.net")),
            Some(Target::Host(
                Name::from_ascii("relay.example.net.").unwrap()
            ))
        );
    }

    #[test]
    fn the_zone_needs_a_nameserver() {
        let mut config = IngressConfig {
            domain: "apps.example.org".into(),
            https_port: 443,
            dns_ttl_secs: 30,
            ..Default::default()
        };
        assert!(matches!(Zone::new(&config), Err(ZoneError::NoNameserver)));
        config.dns_nameserver = Some("ns1.apps.example.org".into());
        let zone = Zone::new(&config).unwrap();
        assert_eq!(zone.apex, Name::from_ascii("apps.example.org.").unwrap());
        assert_eq!(zone.soa.minimum(), 30);
    }
}
