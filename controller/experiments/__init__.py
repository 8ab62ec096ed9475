"""Experiments and adaptive rules: the statistics the controller decides with. Pure: no I/O, stdlib only.

- `counts`: per-arm sufficient statistics (requests answered / failed; count, sum and sum of
  squares of latency, time to first token, cost and quality) that sidecars count, the
  controller sums, and status stores as small dicts.
- `msprt` and `decide`: the stop rule of an A/B test or canary. The test is the mixture
  sequential probability ratio test (mSPRT, Johari et al., "Always Valid Inference") on the
  difference between each arm and the control, a difference of means (latency, cost,
  quality) or of proportions (error rate), with a normal mixing distribution N(0, tau^2) and
  tau = the minimum detectable effect. Its likelihood ratio is a martingale under "no
  difference", so by Ville's inequality the chance it ever crosses 1/alpha is at most alpha
  however often it is read: the controller may look after every report, and a stopped
  experiment's p-value and confidence sequence mean what they say. With more than two arms
  each is compared with the control at alpha / (k - 1) (Bonferroni). The decision is
  Running, Winner (an arm, or the control), NoDifference (the confidence sequence rules out
  any difference as large as the minimum detectable effect), StoppedByGuardrail (an arm
  worse than the control beyond a margin, shown by the same confidence sequence) or
  MaxDurationReached.
- `bandit`: Thompson sampling shares for adaptive rules (Beta-Bernoulli for success-type
  rewards, normal for quality minus weighted cost and latency), with a floor of exploration.

Assumptions: requests are independent of one another and each is counted in the arm that
served it (sticky assignment by user makes a user's requests correlated: a heavy user then
counts as many independent ones, and the test is too confident in proportion); the arms'
shares do not change with the outcomes while a test runs (an adaptive rule is not a test);
the difference of means is close to normal with its variance estimated from the data,
which needs a minimum sample per arm (skewed latencies, rare errors): `min_samples`, at
least MIN_SAMPLES_FLOOR.
"""
