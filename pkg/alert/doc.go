// Package alert tells on-call about anomalous token use: what was seen, the
// baseline it broke, and what Cordon did about it (revoked the token, would
// have revoked it in dry-run mode, only alerted, or paged for a break-glass
// token it never revokes automatically).
//
// Alerts are grouped per token: a Dispatcher keeps one open alert per token,
// further anomalies for it update that alert, and revoking the token (or its
// expiry) resolves it. Each Sink renders an alert in one receiver's format:
//
//   - Webhook: the JSON Alertmanager posts to webhook receivers (version
//     "4", groupKey, status, receiver, groupLabels, commonLabels,
//     commonAnnotations, externalURL, alerts[]), so anything that accepts
//     Alertmanager webhooks accepts Cordon's;
//   - Slack: an incoming-webhook message ({"text", "blocks"});
//   - PagerDuty: an Events API v2 event (trigger, then resolve with the same
//     dedup_key).
//
// Delivery happens in the background, one worker per sink, so the anomaly
// consumer never waits for a receiver. A failed delivery is retried with
// exponential back-off for a bounded number of attempts when the failure is
// transient (network error, 429, 5xx); the order of one token's
// notifications is kept (a resolve never overtakes its trigger), and a
// not-yet-sent update of a token's open alert is replaced by the newer one.
//
// Sink URLs and routing keys are credentials: they are never logged, and
// delivery errors are stripped of them.
package alert
