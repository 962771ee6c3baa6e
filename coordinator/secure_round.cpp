#include "impl.h"

namespace fedpod::coordinator {

Status Coordinator::Impl::resolve_secure_aggregation() {
  const auto& want = spec.secure_aggregation;
  if (!want.enabled) return Status();
  namespace sa = protocol::secagg;
  const size_t all = spec.pods.size();
  const size_t answered = active_pods().size();
  sa::Settings s;
  // Neighbours among the pods that can take part; the fixed-point range for all the
  // job's pods (any of them may rejoin).
  s.neighbours = want.neighbours ? std::min<uint32_t>(want.neighbours, static_cast<uint32_t>(answered - 1))
                                 : sa::default_neighbours(answered);
  s.threshold = want.threshold ? want.threshold : sa::default_threshold(s.neighbours);
  s.clip = want.clip;
  s.modulus_bits = want.modulus_bits ? want.modulus_bits : sa::modulus_bits_for(s.clip, all);
  s.fraction_bits = sa::fraction_bits(s.modulus_bits, s.clip, all);
  // A pod's weight is its training rows over the largest dataset's rows (<= 1).
  s.weight_scale = static_cast<double>(std::max<int64_t>(1, max_rows));
  if (Status st = sa::validate(s); !st.ok()) {
    config_error = true;
    return Status(StatusCode::kInvalidArgument,
                  st.message() + " (with " + std::to_string(answered) + " pods answering; job.yaml secure_aggregation)");
  }
  secagg = s;
  history["secure_aggregation"] = {{"threshold", s.threshold},       {"neighbours", s.neighbours},
                                   {"clip", s.clip},                 {"modulus_bits", s.modulus_bits},
                                   {"fraction_bits", s.fraction_bits}, {"weight_scale", s.weight_scale}};
  progress << "secure aggregation: threshold " << s.threshold << ", " << s.neighbours << " neighbours per pod, clip "
           << s.clip << ", " << s.modulus_bits << "-bit ring with " << s.fraction_bits << " fraction bits\n";
  return Status();
}

std::map<size_t, PodRound> Coordinator::Impl::secure_round(int round, uint64_t rid, const std::vector<size_t>& targets,
                                        protocol::Outgoing& train, Clock::time_point start,
                                        const torch::Tensor& global, aggregation::Strategy& strategy,
                                        long double& loss_sum, int64_t& loss_weight, double& seconds_aggregating,
                                        size_t& sent) {
  namespace sa = protocol::secagg;
  using B = wire::Envelope::Body;
  // Step A (training) ends at the round's deadline, as a plain round's does; each later
  // step has round_timeout of its own from when it starts. With one deadline for all
  // four, a pod that trained past it (a straggler, or a pod that stalls on purpose)
  // left the others no time to share, mask and reveal: the round failed, and with it
  // the job, where a plain round just leaves the straggler out.
  const auto deadline = start + spec.round_timeout;
  auto step_deadline = [&] { return Clock::now() + spec.round_timeout; };
  const uint32_t r = static_cast<uint32_t>(round);
  auto index = [&](const Pod& pod) { return static_cast<size_t>(&pod - pods.data()); };
  auto wrong_round = [&](const char* kind, uint32_t got) {
    return PodRound{"error", std::string(kind) + " for round " + std::to_string(got) + ", the coordinator is in round " +
                                 std::to_string(round), 0, 0, {}};
  };
  std::vector<uint32_t> ids;
  for (size_t i : targets) ids.push_back(secagg_id(i));
  std::random_device rd;
  sa::Server server(*secagg, {spec.job_id, r}, ids, (static_cast<uint64_t>(rd()) << 32) | rd());
  std::map<size_t, PodRound> outcome;  // pods out of the round, and at the end everyone
  std::map<size_t, PodRound> trained;  // trainDone's metadata
  secagg_steps = nlohmann::json::object();
  auto step_start = Clock::now();
  auto settle = [&](const std::map<size_t, PodRound>& step, std::vector<size_t>& still_in, const char* name) {
    const auto now = Clock::now();
    secagg_steps[std::string(name) + "_seconds"] = std::chrono::duration<double>(now - step_start).count();
    step_start = now;
    still_in.clear();
    std::vector<uint32_t> still_ids;
    for (const auto& [i, p] : step) {
      if (p.outcome == "ok") {
        still_in.push_back(i);
        still_ids.push_back(secagg_id(i));
      } else {
        outcome[i] = p;
      }
    }
    if (step_observer) step_observer(round, name, still_ids);
  };
  // The round fails: every pod still in it gets the reason; nothing was unmasked.
  auto fail = [&](const Status& st) {
    log->warn("event=secagg_round_failed job={} round={} error=\"{}\"", spec.job_id, round, st.message());
    for (const auto& [i, p] : trained) {
      if (!outcome.count(i)) outcome[i] = PodRound{"secagg_failed", st.message(), 0, 0, {}};
    }
    return outcome;
  };

  // A. Train; the trainDone of each pod carries its public keys for the round.
  auto a = exchange(train, rid, targets, {B::TRAIN_DONE}, deadline, true,
      [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
        auto d = in.envelope().getBody().getTrainDone();
        if (d.getRound() != r) return wrong_round("trainDone", d.getRound());
        if (d.getNumSamples() == 0) return PodRound{"error", "trained on no samples", 0, 0, {}};
        if (!d.hasSecAggKeys()) return PodRound{"error", "trainDone without secure aggregation keys", 0, 0, {}};
        // The weight FedAvg would give it (capped at its training rows); the pod
        // applies its own inside the masked sum.
        int64_t n = static_cast<int64_t>(std::min<uint64_t>(d.getNumSamples(), uint64_t{1} << 62));
        if (pod.train_samples == 0) {
          return PodRound{"error", "trainDone from a pod whose jobAccepted reported no training rows", 0, 0, {}};
        }
        n = std::min(n, pod.train_samples);
        PodRound pr{"ok", "", n, 0, {}};
        // Checked before its keys join the round: a refused pod is not in it.
        if (Status st = take_train_metrics(pod, static_cast<int>(r), d, pr); !st.ok()) {
          return PodRound{"error", st.message(), 0, 0, {}};
        }
        if (Status st = server.add_keys(secagg_id(index(pod)), sa::from_wire(d.getSecAggKeys())); !st.ok()) {
          return PodRound{"error", st.message(), 0, 0, {}};
        }
        trained[index(pod)] = pr;
        return pr;
      },
      nullptr, &sent, /*heartbeats=*/true);
  std::vector<size_t> in_round;
  settle(a, in_round, "advertise");
  if (Status st = server.close_advertise(); !st.ok()) return fail(st);

  // B. Each pod gets its neighbours' keys and returns its encrypted shares.
  const uint64_t rid_b = next_request++;
  std::map<size_t, protocol::Outgoing> share_msgs;
  for (size_t i : in_round) {
    auto m = share_msgs.try_emplace(i, spec.job_id, rid_b).first->second.envelope().getBody().initSecAggShare();
    m.setRound(r);
    const auto nb = server.neighbours_of(secagg_id(i));
    auto list = m.initNeighbours(static_cast<unsigned>(nb.size()));
    unsigned k = 0;
    for (const auto& [id, pk] : nb) {
      list[k].setId(id);
      sa::to_wire(pk, list[k].initKeys());
      ++k;
    }
  }
  auto b = exchange_each([&](size_t i) -> protocol::Outgoing& { return share_msgs.at(i); }, rid_b, in_round,
      {B::SEC_AGG_SHARES}, step_deadline(), true,
      [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
        auto m = in.envelope().getBody().getSecAggShares();
        if (m.getRound() != r) return wrong_round("secAggShares", m.getRound());
        if (Status st = server.add_shares(secagg_id(index(pod)), sa::from_wire(m.getShares())); !st.ok()) {
          return PodRound{"error", st.message(), 0, 0, {}};
        }
        return PodRound{"ok", "", 0, 0, {}};
      },
      nullptr, nullptr, true);
  settle(b, in_round, "share");
  if (Status st = server.close_share(); !st.ok()) return fail(st);

  // C. Each pod gets the shares addressed to it and masks its update; the masked
  //    updates are pulled like plain ones and summed in the ring as they arrive.
  const uint64_t rid_c = next_request++;
  std::map<size_t, protocol::Outgoing> mask_msgs;
  for (size_t i : in_round) {
    auto m = mask_msgs.try_emplace(i, spec.job_id, rid_c).first->second.envelope().getBody().initSecAggMask();
    m.setRound(r);
    const auto shares = server.shares_for(secagg_id(i));
    sa::to_wire(shares, m.initShares(static_cast<unsigned>(shares.size())));
  }
  protocol::Outgoing fetch(spec.job_id, rid_c);
  fetch.envelope().getBody().initFetchResult().setRound(r);
  std::deque<size_t> ready;
  std::set<size_t> fetching;
  auto start_fetches = [&](const std::vector<size_t>& pending) { fill_upload_window(pending, fetching, ready, fetch); };
  const auto ring_dtype = secagg->modulus_bits == 32 ? wire::DType::INT32 : wire::DType::INT64;
  const std::vector<protocol::TensorSpec> ring_spec = {{"secagg", {global.numel() + 1}}};
  std::set<size_t> masked_ready;
  auto c = exchange_each([&](size_t i) -> protocol::Outgoing& { return mask_msgs.at(i); }, rid_c, in_round,
      {B::SEC_AGG_MASKED, B::TRAIN_RESULT}, step_deadline(), true,
      [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
        const size_t i = index(pod);
        auto body = in.envelope().getBody();
        if (body.which() == B::SEC_AGG_MASKED) {
          if (body.getSecAggMasked().getRound() != r) return wrong_round("secAggMasked", body.getSecAggMasked().getRound());
          if (masked_ready.insert(i).second) ready.push_back(i);
          return std::nullopt;  // the masked update is still to fetch
        }
        auto t = body.getTrainResult();
        if (t.getRound() != r) return wrong_round("trainResult", t.getRound());
        if (!fetching.count(i)) {
          discard(pod, kUnfetched, in.envelope(), rid_c);
          return std::nullopt;
        }
        if (!t.getMasked()) return PodRound{"error", "trainResult is not a masked update, the job aggregates securely", 0, 0, {}};
        auto tensors = in.take_tensors(t.getTensors(), ring_spec, false, ring_dtype);
        if (!tensors.ok()) return PodRound{"error", tensors.status().message(), 0, 0, {}};
        const torch::Tensor& v = (*tensors)[0];
        job_metrics.bytes_received.Increment(static_cast<double>(v.nbytes()));
        const auto fold_start = Clock::now();
        Status added = server.add_masked(secagg_id(i), v.data_ptr(), v.nbytes());
        seconds_aggregating += std::chrono::duration<double>(Clock::now() - fold_start).count();
        if (!added.ok()) return PodRound{"error", added.message(), 0, 0, {}};
        folded_updates.insert({round, i});
        return PodRound{"ok", "", 0, 0, {}};
      },
      start_fetches, nullptr, true, [&](size_t i) { return fetching.count(i) > 0; });
  settle(c, in_round, "mask");
  if (Status st = server.close_mask(); !st.ok()) return fail(st);

  // D. The survivors reveal what removes the masks: self-mask seeds of survivors,
  //    mask keys of the pods that dropped after sharing.
  const uint64_t rid_d = next_request++;
  protocol::Outgoing unmask(spec.job_id, rid_d);
  {
    auto m = unmask.envelope().getBody().initSecAggUnmask();
    m.setRound(r);
    const auto& survivors = server.survivors();
    const auto dropped = server.dropped();
    auto s = m.initSurvivors(static_cast<unsigned>(survivors.size()));
    for (size_t k = 0; k < survivors.size(); ++k) s.set(static_cast<unsigned>(k), survivors[k]);
    auto d = m.initDropped(static_cast<unsigned>(dropped.size()));
    for (size_t k = 0; k < dropped.size(); ++k) d.set(static_cast<unsigned>(k), dropped[k]);
  }
  auto d = exchange(unmask, rid_d, in_round, {B::SEC_AGG_REVEAL}, step_deadline(), true,
      [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
        auto m = in.envelope().getBody().getSecAggReveal();
        if (m.getRound() != r) return wrong_round("secAggReveal", m.getRound());
        sa::Reveal rv{sa::from_wire(m.getSelfMask()), sa::from_wire(m.getPairKey())};
        if (Status st = server.add_reveal(secagg_id(index(pod)), rv); !st.ok()) return PodRound{"error", st.message(), 0, 0, {}};
        return PodRound{"ok", "", 0, 0, {}};
      },
      nullptr, nullptr, true);
  secagg_steps["unmask_seconds"] = std::chrono::duration<double>(Clock::now() - step_start).count();
  if (step_observer) {
    std::vector<uint32_t> revealed;
    for (const auto& [i, p] : d) {
      if (p.outcome == "ok") revealed.push_back(secagg_id(i));
    }
    step_observer(round, "unmask", revealed);
  }
  for (const auto& [i, p] : d) {
    if (p.outcome != "ok") {
      // Its update is in the sum; the others' shares remove its self mask.
      log->warn("event=secagg_no_reveal job={} round={} pod={} outcome={} reason=\"{}\"", spec.job_id, round,
                pods[i].addr.name, p.outcome, p.error);
    }
  }
  const auto unmask_start = Clock::now();
  torch::Tensor next = global.clone();
  auto total_weight = server.add_average_to(next.data_ptr<float>(), static_cast<size_t>(next.numel()));
  if (!total_weight.ok()) return fail(total_weight.status());
  // Its largest value, for the strategy's overflow bound, in one pass without a
  // temporary (the strategy would otherwise take it with abs().max()).
  const float next_largest = protocol::largest_magnitude(next.data_ptr<float>(), static_cast<size_t>(next.numel()));
  Status folded = strategy.fold({{0, next, next_largest}}, 1.0);
  secagg_steps["finish_seconds"] = std::chrono::duration<double>(Clock::now() - unmask_start).count();
  secagg_steps["survivors"] = server.survivors().size();
  secagg_steps["dropped"] = server.dropped().size();
  seconds_aggregating += std::chrono::duration<double>(Clock::now() - unmask_start).count();
  if (!folded.ok()) return fail(folded);
  for (size_t i : in_round) {
    outcome[i] = trained[i];
    if (outcome[i].metrics.count("train_loss")) {
      loss_sum += static_cast<long double>(outcome[i].metrics["train_loss"]) * outcome[i].num_samples;
      loss_weight += outcome[i].num_samples;
    }
  }
  return outcome;
}

}  // namespace fedpod::coordinator
