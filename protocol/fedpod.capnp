# fedpod wire protocol, version 1.
#
# Every ZeroMQ message is multipart: frame 0 is an Envelope; frames 1..n carry raw
# tensor bytes, each described by a TensorInfo in the envelope's body. Tensors never
# travel inside Cap'n Proto (blobs there are capped at 2^29 bytes and cost a copy).
#
# Once a pod accepted a job with a tensor channel (startJob.tensorKey,
# jobAccepted.tensorKey/tensorPort), the coordinator sends train, fetchResult and
# evaluate sealed (AES-256-GCM, protocol/bulk.h) to the pod's tensor endpoint, and
# the pod answers each request on the channel it came in on.
#
# Requests and replies (coordinator -> pod, pod -> coordinator):
#   hello         -> helloReply
#   startJob      -> jobAccepted | error
#   train         -> trainDone   | error      (parameters stay on the pod...)
#   fetchResult   -> trainResult | error      (...until the coordinator pulls them)
#   evaluate      -> evalResult  | error
#   endJob        -> jobEnded    | error
#   heartbeat     -> heartbeat
#
# Secure aggregation (startJob.secureAggregation set; protocol/secagg.h,
# docs/privacy.md), per round after train (whose trainDone carries the pod's keys):
#   secAggShare   -> secAggShares  (neighbours' keys in; encrypted shares out)
#   secAggMask    -> secAggMasked  (the shares addressed to the pod in; it masks its update)
#   fetchResult   -> trainResult   (one int32/int64 tensor "secagg": the masked update)
#   secAggUnmask  -> secAggReveal  (survivors and dropped in; the shares that remove masks out)
# A reply echoes the request's jobId and requestId.
@0xc3a1f6d2e4b59a17;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("fedpod::wire");

const protocolVersion :UInt16 = 1;

enum ErrorCode {
  ok @0;
  invalidArgument @1;
  badMessage @2;
  notFound @3;
  busy @4;
  failedPrecondition @5;
  permissionDenied @6;
  versionMismatch @7;
  schemaMismatch @8;
  deadlineExceeded @9;
  unavailable @10;
  internal @11;
}

enum DType {
  float32 @0;
  float64 @1;
  int64 @2;
  int32 @3;
  bfloat16 @4;
}

enum Encoding {
  raw @0;      # little-endian, C-contiguous
}

struct TensorInfo {
  name @0 :Text;
  dtype @1 :DType;
  shape @2 :List(Int64);
  frame @3 :UInt32;     # index of the frame holding the bytes (1..n)
  bytes @4 :UInt64;     # must equal the frame's size and numel * sizeof(dtype)
  encoding @5 :Encoding;
}

struct Metric {
  name @0 :Text;
  value @1 :Float64;
}

enum ColumnType {
  numeric @0;
  categorical @1;
}

struct Column {
  name @0 :Text;
  type @1 :ColumnType;
  categories @2 :List(Text);
  # A categorical column whose categories the pod inferred from its data and does
  # not publish (categories is then empty): its codes are the pod's own until the
  # job's datastructure gives the categories.
  categoriesWithheld @3 :Bool;
}

struct Schema {
  columns @0 :List(Column);
  numRows @1 :UInt64;
}

struct SplitSpec {
  validation @0 :Float64;
  test @1 :Float64;
  seed @2 :UInt64;
}

struct Datastructure {
  target @0 :Text;
  features @1 :List(Text);     # resolved by the coordinator: same order on every pod
  ignore @2 :List(Text);
  inputShape @3 :List(Int64);
  numClasses @4 :UInt32;
  scale @5 :Float64;
  split @6 :SplitSpec;
  # Agreed before round 1: for each categorical column (target or feature) with named
  # categories, the list whose i-th value every pod encodes as i.
  categories @7 :List(ColumnCategories);
}

struct ColumnCategories {
  column @0 :Text;
  values @1 :List(Text);
}

# A model reference. For a built-in model only modelRef (and hyperparameters) is set.
# For a custom model (username non-empty) the coordinator has resolved the reference
# through the model hub to one exact version and downloaded its artifact (checking
# the hub's sha256). startJob then carries the artifact itself: the raw bytes of the
# TorchScript archive (.pt) or native plugin (.so) in one extra frame, index
# artifactFrame, of artifactBytes bytes. Pods do not contact the hub. The pod checks
# the frame's length, re-hashes the bytes and refuses the job (badMessage, naming
# both hashes) when the sha256 differs from `sha256`; it writes the bytes to a
# private file (mode 0600) and loads them by `format`. Pods refuse custom models
# unless their pod.yaml sets custom_models: allow_unauthenticated (permissionDenied
# otherwise): until CURVE identities and grants exist, `username` is unauthenticated.
# The frame must fit the pod's max_frame_bytes (helloReply.maxFrameBytes).
struct ModelReference {
  username @0 :Text;           # empty for the built-in zoo
  modelRef @1 :Text;           # "mlp", or a hub model name
  modelVersion @2 :UInt32;     # 0 = latest; in startJob of a custom model, the resolved version
  hyperparameters @3 :Text;    # a JSON object
  sha256 @4 :Text;             # custom models: lowercase hex sha256 of the artifact
  format @5 :Text;             # custom models: "torchscript" or "plugin"
  artifactFrame @6 :UInt32;    # custom models: index of the frame with the artifact (0: none)
  artifactBytes @7 :UInt64;    # custom models: the artifact's length; must equal the frame's size
}

enum Split {
  train @0;
  validation @1;
  test @2;
}

struct Hello {}

struct HelloReply {
  podName @0 :Text;
  schema @1 :Schema;
  devices @2 :List(Text);
  activeJob @3 :Text;          # empty when idle
  maxFrameBytes @4 :UInt64;    # largest frame the pod accepts (bounds a custom model's artifact)
  sandbox @5 :Text;            # how model code is confined: "namespaces+seccomp+rlimits",
                               # "seccomp+rlimits", or "in-process" (an embedded worker)
}

struct StartJob {
  model @0 :ModelReference;
  datastructure @1 :Datastructure;
  seed @2 :UInt64;
  # The coordinator's fresh X25519 public key (32 bytes) for this job's tensor
  # channel (protocol/bulk.h, docs/tensor-encryption.md); empty: tensors over CURVE.
  tensorKey @3 :Data;
  # Set (threshold > 0): updates are aggregated securely; the pod's id in the rounds.
  secureAggregation @4 :SecureAggregation;
  # What the job will ask of the pod in its rounds, so that the pod can check its
  # privacy limits (pod.yaml privacy) and account the whole job's ε before it
  # accepts. rounds 0: not declared (a coordinator before this field).
  plan @5 :TrainingPlan;
  # Set (noiseMultiplier > 0): every train of the job runs DP-SGD
  # (privacy/dp_sgd.h): per-example gradients clipped to maxGradNorm, Gaussian noise
  # of standard deviation noiseMultiplier·maxGradNorm, Poisson sampling.
  differentialPrivacy @6 :DifferentialPrivacy;
}

struct TrainingPlan {
  rounds @0 :UInt32;           # the most train messages the job will send
  localEpochs @1 :UInt32;      # as in Train
  localSteps @2 :UInt32;
  batchSize @3 :UInt32;
}

struct DifferentialPrivacy {
  noiseMultiplier @0 :Float64; # sigma; 0: off
  maxGradNorm @1 :Float64;     # C
}

# The job's secure aggregation settings (protocol/secagg.h: Settings).
struct SecureAggregation {
  threshold @0 :UInt32;        # 0: off
  neighbours @1 :UInt32;
  clip @2 :Float64;
  modulusBits @3 :UInt32;      # 32 or 64
  fractionBits @4 :UInt32;
  weightScale @5 :Float64;
  podId @6 :UInt32;            # this pod's id in the protocol (1..)
}

struct SecAggKeys {
  cPk @0 :Data;                # 32 bytes each
  sPk @1 :Data;
  bCommit @2 :Data;
}

struct SecAggPeer {
  id @0 :UInt32;
  keys @1 :SecAggKeys;
}

struct SecAggShareBox {
  owner @0 :UInt32;
  recipient @1 :UInt32;
  ciphertext @2 :Data;
}

struct SecAggRevealed {
  owner @0 :UInt32;
  x @1 :UInt8;
  share @2 :Data;
}

struct SecAggShare {
  round @0 :UInt32;
  neighbours @1 :List(SecAggPeer);
}

struct SecAggShares {
  round @0 :UInt32;
  shares @1 :List(SecAggShareBox);
}

struct SecAggMask {
  round @0 :UInt32;
  shares @1 :List(SecAggShareBox);
}

struct SecAggMasked {
  round @0 :UInt32;
}

struct SecAggUnmask {
  round @0 :UInt32;
  survivors @1 :List(UInt32);
  dropped @2 :List(UInt32);
}

struct SecAggReveal {
  round @0 :UInt32;
  selfMask @1 :List(SecAggRevealed);
  pairKey @2 :List(SecAggRevealed);
}

struct JobAccepted {
  trainSamples @0 :UInt64;
  validationSamples @1 :UInt64;
  testSamples @2 :UInt64;
  skippedRows @3 :UInt64;
  numParameters @4 :UInt64;
  decision @5 :Text;           # why the pod accepted: "general-modeller", "super-modeller",
                               # "general-modeller with grant 7 (no expiry)"
  # The pod's half of the tensor channel's key agreement and the port of its tensor
  # endpoint (same host as the CURVE endpoint). Empty key / port 0: the pod offers
  # no tensor channel and the job's tensors travel over CURVE.
  tensorKey @6 :Data;
  tensorPort @7 :UInt16;
  # The pod honours Train.uploadWhenDone (older pods leave it false and are always
  # asked with fetchResult).
  uploadsWhenDone @8 :Bool;
}

struct Train {
  round @0 :UInt32;
  localEpochs @1 :UInt32;      # 0 when localSteps is used
  localSteps @2 :UInt32;       # 0 when localEpochs is used
  batchSize @3 :UInt32;
  tensors @4 :List(TensorInfo);
  # How the pod returns its update: float32 (the trained parameters) or bfloat16
  # (the trained parameters minus this message's, rounded to bfloat16: half the
  # bytes; the coordinator adds them back to its float32 parameters).
  updateDtype @5 :DType;
  # FedProx (aggregation/strategies.h): μ of the proximal term μ/2·‖w − w_global‖² the
  # pod adds to its local objective this round; 0: none. Finite and >= 0.
  proximalMu @6 :Float64;
  # The coordinator reserved one of its max_concurrent_uploads slots for this pod:
  # it sends trainResult (same request id) right after trainDone instead of waiting
  # for fetchResult. Set only for pods whose jobAccepted said uploadsWhenDone, and
  # only when every pod of the round fits in the window at once.
  uploadWhenDone @7 :Bool;
  # The dtype of `tensors`: float32, or bfloat16 (the coordinator's float32
  # parameters rounded, half the bytes; job.yaml broadcast_precision). The pod trains
  # in float32 from them; a bfloat16 update is then its change to these values.
  paramsDtype @8 :DType;
}

# Training finished; the parameters wait on the pod for fetchResult. Pulling them
# lets the coordinator bound how many uploads are in flight at once, so its memory
# does not grow with the number of pods.
struct TrainDone {
  round @0 :UInt32;
  numSamples @1 :UInt64;
  metrics @2 :List(Metric);
  seconds @3 :Float64;
  secAggKeys @4 :SecAggKeys;   # secure aggregation: this round's public keys
}

struct FetchResult {
  round @0 :UInt32;
}

struct TrainResult {
  round @0 :UInt32;
  numSamples @1 :UInt64;       # samples trained on (weights FedAvg)
  metrics @2 :List(Metric);
  tensors @3 :List(TensorInfo);
  seconds @4 :Float64;
  # The tensors are the trained parameters minus the round's train message's
  # (Train.updateDtype bfloat16), not the parameters themselves.
  delta @5 :Bool;
  # Secure aggregation: one tensor, "secagg", int32 (2^32 ring) or int64, of
  # numParameters + 1 elements: the masked, weighted, fixed-point update.
  masked @6 :Bool;
}

struct Evaluate {
  round @0 :UInt32;
  split @1 :Split;
  batchSize @2 :UInt32;
  tensors @3 :List(TensorInfo);
}

struct EvalResult {
  round @0 :UInt32;
  split @1 :Split;
  numSamples @2 :UInt64;
  loss @3 :Float64;
  accuracy @4 :Float64;
  metrics @5 :List(Metric);
}

struct EndJob {
  reason @0 :Text;
}

struct JobEnded {}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
}

struct Heartbeat {
  busy @0 :Bool;
  round @1 :UInt32;
}

struct Envelope {
  protocolVersion @0 :UInt16;
  jobId @1 :Text;
  requestId @2 :UInt64;
  body :union {
    hello @3 :Hello;
    helloReply @4 :HelloReply;
    startJob @5 :StartJob;
    jobAccepted @6 :JobAccepted;
    train @7 :Train;
    trainResult @8 :TrainResult;
    evaluate @9 :Evaluate;
    evalResult @10 :EvalResult;
    endJob @11 :EndJob;
    jobEnded @12 :JobEnded;
    error @13 :Error;
    heartbeat @14 :Heartbeat;
    trainDone @15 :TrainDone;
    fetchResult @16 :FetchResult;
    secAggShare @17 :SecAggShare;
    secAggShares @18 :SecAggShares;
    secAggMask @19 :SecAggMask;
    secAggMasked @20 :SecAggMasked;
    secAggUnmask @21 :SecAggUnmask;
    secAggReveal @22 :SecAggReveal;
  }
}
