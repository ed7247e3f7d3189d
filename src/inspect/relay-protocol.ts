// The one message of Drover's own on the inspector relay, beside @statelyai/inspect's.

/**
 * Sent by the relay to everyone else when a client connects: an inspector page that opens late
 * has missed the actors' registrations, so a daemon hearing it announces its live actors again.
 * The inspector page ignores it (it is no `@xstate.` message).
 */
export const clientJoinedMessage = JSON.stringify({ type: '@drover.relay.joined' });
