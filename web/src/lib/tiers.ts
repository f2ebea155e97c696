/** Quality tiers (LeaseEscrow.QualityTier order): how many VMs share a physical CPU. */
export const QUALITY_TIERS = [
  { value: 0, key: 'dedicated', name: 'Dedicated', words: '1:1, each vCPU is a whole CPU of the host. For steady, CPU-bound work.' },
  { value: 1, key: 'standard', name: 'Standard', words: '1.5:1 overcommit. Close to dedicated for most services.' },
  { value: 2, key: 'balanced', name: 'Balanced', words: '2:1 overcommit. Good for web services with bursts.' },
  { value: 3, key: 'burstable', name: 'Burstable', words: '4:1 overcommit, the cheapest. For light or idle workloads.' },
] as const;

/** Bandwidth tiers (LeaseEscrow.BandwidthTier order), with what the contract adds to the rate. */
export const BANDWIDTH_TIERS = [
  { value: 0, name: 'Basic', words: '10 Mbps, +$0.005 per hour.' },
  { value: 1, name: 'Standard', words: '50 Mbps, +$0.015 per hour.' },
  { value: 2, name: 'Performance', words: '200 Mbps, +$0.040 per hour, rate ×1.2.' },
  { value: 3, name: 'Unmetered', words: 'No cap, +$0.040 per hour, rate ×1.5.' },
] as const;

export const LEASE_STATUS = ['None', 'Active', 'Closed', 'Terminated'] as const;
