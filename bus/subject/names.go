package subject

// Names of the federation's own NATS state: the JetStream streams and
// key-value buckets, the consent service's API prefix and the operator's
// identity. The NATS configuration (bus/natsconf) grants permissions on
// them, the operator creates them (gateway/natsstate), and the audit log and
// consent service use them; all take them from here.

// Stream and bucket names.
const (
	AuditStream      = "JISR_AUDIT"            // the audit records (subjects AuditPrefix.>)
	CheckpointStream = "JISR_CHECKPOINTS"      // the signed checkpoints (subjects CheckpointPrefix.>)
	RevocationBucket = "jisr_revocations"      // revoked consent token IDs
	UsageBucket      = "jisr_usage"            // consent token use counters
	ConsentBucket    = "jisr_consents"         // consent grants, by citizen key
	RequestBucket    = "jisr_consent_requests" // consent requests and their lifecycle, by citizen key
	// FederationBucket holds the signed federation bundles, one value per
	// version under FederationKey (history kept): only the operator writes.
	FederationBucket = "jisr_federation"
)

// FederationKey is the key of the federation bundle in FederationBucket.
const FederationKey = "bundle"

// ConsentProvider is the provider token of a consumer's consent request
// (jisr.q.<consumer>.consent.jisr_consent_v1_ConsentRequests.<method>.<ckey>):
// the gateway answers it with the consent service, never a member.
const ConsentProvider = "consent"

// ConsentAuditLog names the consent service's own audit log: the records of
// the transitions it stores by itself (a consent expired, used up), on
// jisr.audit.consent.… and jisr.checkpoint.consent. No gateway instance
// may take this name.
const ConsentAuditLog = "consent"

// ConsentAPI prefixes the consent service's NATS API (grant, list, revoke):
// only the gateway publishes there, only the consent identity subscribes
// (h5-tokens: the signing key lives with the consent service alone).
const ConsentAPI = "jisr.consent"

// ConsentOperatorAPI prefixes the consent service's operator API (grant,
// revoke by jti: `jisr consent grant|revoke`): only the operator identity
// publishes there, only the consent identity subscribes — the replica that
// holds the writer's lease of the consent audit log, which records each
// action before it is answered. Apart from ConsentAPI, which the gateway
// may publish to.
const ConsentOperatorAPI = "jisr.consentop"

// Operator is the identity name of the operator: spiffe://<td>/operator.
// It alone creates or changes a stream or bucket.
const Operator = "operator"

// BucketStream is the JetStream stream that backs a key-value bucket.
func BucketStream(bucket string) string { return "KV_" + bucket }

// BucketKeyPrefix is the prefix of the subjects of a bucket's keys:
// $KV.<bucket>.<key>.
func BucketKeyPrefix(bucket string) string { return "$KV." + bucket + "." }

// BucketKeys is the wildcard of all a bucket's keys: $KV.<bucket>.>.
func BucketKeys(bucket string) string { return BucketKeyPrefix(bucket) + ">" }

// Discovery is the subject prefix of NATS micro's discovery requests
// ($SRV.PING|INFO|STATS[.<name>[.<id>]]): each provider adapter registers
// its services there as DiscoveryName(member) (bus/catalog); only the
// operator asks (jisr services --live), so a member cannot use a provider's
// answers as a channel around the gateway.
const Discovery = "$SRV"

// DiscoveryName is the NATS micro service name of a member's provider side.
func DiscoveryName(member string) string { return "jisr-" + member }
