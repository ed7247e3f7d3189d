// Streams the daemon's actors to the Stately inspector: the daemon is a WebSocket client of a
// relay (`drover inspect-relay`), which passes the messages on to the inspector page in a browser.
// The messages are @statelyai/inspect's own (`@xstate.actor`, `@xstate.snapshot`, `@xstate.event`),
// made by its createInspector; only the socket under it is Drover's (RelayConnection, below).
import { createInspector, type StatelyInspectionEvent } from '@statelyai/inspect';
import type { Logger } from 'pino';
import { WebSocket, type RawData } from 'ws';
import type { ActorRefLike, AnyEventObject, InspectionEvent, Observer } from 'xstate';
import type { ActorInspection, InspectedActor } from './actor-inspection.js';
import { clientJoinedMessage } from './relay-protocol.js';
import { actorSelection } from './settings.js';
import { inspectionJson, trimFields } from './trim.js';

export interface StatelyInspectionOptions {
  /** The relay's ws:// or wss:// URL. */
  url: string;
  /** `inspect.actors`: pool, all, instance:<id>. */
  actors: readonly string[];
  logger: Logger;
  /** First wait before connecting again to a relay that is not there; doubles up to 30 s. */
  reconnectMs?: number;
}

export interface StatelyInspection extends ActorInspection {
  /** Closes the socket and stops reconnecting. */
  stop(): void;
}

const maxReconnectMs = 30_000;
/** Past this much unsent on the socket (a relay that does not keep up), messages are dropped, not queued. */
const maxBufferedBytes = 16 * 1024 * 1024;

/**
 * The socket under createInspector, in place of the package's WebSocketAdapter (0.7.2): that one
 * keeps reconnecting after stop() once a connect failed, never reconnects after a clean close (a
 * relay restarted), and queues without bound behind a slow relay.
 */
class RelayConnection {
  private socket: WebSocket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private delayMs: number;
  /** Logged once per spell, so a relay that is not running yet costs one line, not one per retry. */
  private failureLogged = false;
  private dropping = false;

  constructor(
    private readonly url: string,
    private readonly logger: Logger,
    private readonly firstDelayMs: number,
    /** The relay is there, or a page joined it: the live actors are to be announced again. */
    private readonly announce: () => void,
  ) {
    this.delayMs = firstDelayMs;
  }

  start(): void {
    this.connect();
  }

  get open(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    socket?.terminate();
  }

  send(event: StatelyInspectionEvent): void {
    const socket = this.socket;
    // Nothing is kept while disconnected: the next connection announces every live actor afresh.
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (socket.bufferedAmount > maxBufferedBytes) {
      if (!this.dropping) {
        this.dropping = true;
        this.logger.warn({ url: this.url }, 'inspector relay is not keeping up: dropping inspection messages until it does');
      }
      return;
    }
    this.dropping = false;
    socket.send(inspectionJson(event));
  }

  private connect(): void {
    // The relay sends only small notices; anything large is not from it.
    const socket = new WebSocket(this.url, { maxPayload: 64 * 1024 });
    this.socket = socket;
    socket.on('open', () => {
      this.delayMs = this.firstDelayMs;
      this.failureLogged = false;
      this.logger.info({ url: this.url }, 'streaming actors to the Stately inspector relay');
      this.announce();
    });
    socket.on('message', (data: RawData) => {
      if (data.toString() === clientJoinedMessage) this.announce();
    });
    socket.on('error', (error: Error) => {
      if (this.stopped || this.failureLogged) return;
      this.failureLogged = true;
      this.logger.warn({ url: this.url, error: error.message }, 'inspector relay unreachable; retrying (is drover inspect-relay running?)');
    });
    socket.on('close', () => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      if (!this.failureLogged) this.logger.info({ url: this.url }, 'inspector relay connection closed; reconnecting');
      this.failureLogged = true;
      this.timer = setTimeout(() => {
        this.timer = null;
        if (!this.stopped) this.connect();
      }, this.delayMs);
      // A daemon stopping does not wait for a relay to come back.
      this.timer.unref();
      this.delayMs = Math.min(this.delayMs * 2, maxReconnectMs);
    });
  }
}

/** A promise actor's input and output (a whole listing) are not context, so sanitizeContext never sees them. */
function trimSnapshotIo(event: StatelyInspectionEvent): StatelyInspectionEvent {
  if (event.type === '@xstate.snapshot') {
    const snapshot = trimFields(event.snapshot, ['input', 'output']);
    return snapshot === event.snapshot ? event : { ...event, snapshot };
  }
  if (event.type === '@xstate.actor') {
    const snapshot = trimFields(event.snapshot, ['input', 'output']);
    return snapshot === event.snapshot ? event : { ...event, snapshot };
  }
  return event;
}

export function startStatelyInspection(options: StatelyInspectionOptions): StatelyInspection {
  const selection = actorSelection(options.actors);
  /** Actors the inspector has been told of and not yet seen end, with their root's session id. */
  const live = new Map<ActorRefLike, string>();
  const connection = new RelayConnection(options.url, options.logger, options.reconnectMs ?? 1_000, () => announce());
  const inspector = createInspector(connection, {
    sanitizeContext: (context) => trimFields(context),
    sanitizeEvent: (event): AnyEventObject => trimFields(event),
    serialize: trimSnapshotIo,
  });

  // While no relay is connected only the bookkeeping is done: the package would serialize every
  // event for nothing, and the next connection announces every live actor anyway.
  const register = (actorRef: ActorRefLike, rootId: string): void => {
    live.set(actorRef, rootId);
    if (connection.open) inspector.inspect.next?.({ type: '@xstate.actor', actorRef, rootId });
  };

  const forward = (event: InspectionEvent): void => {
    // Microsteps, actions and transitions the package drops anyway, each after a timer of its own.
    if (event.type !== '@xstate.actor' && event.type !== '@xstate.event' && event.type !== '@xstate.snapshot') return;
    const { actorRef } = event;
    if (event.type === '@xstate.actor') {
      register(actorRef, event.rootId);
      return;
    }
    if (!live.has(actorRef)) {
      // An actor chosen after it registered (an instance named by the cloud id its create
      // returned): the inspector must hear of it first. One that has ended stays out.
      if (actorRef.getSnapshot()?.status !== 'active') return;
      register(actorRef, event.rootId);
    }
    if (event.type === '@xstate.snapshot' && event.snapshot.status !== 'active') live.delete(actorRef);
    if (connection.open) inspector.inspect.next?.(event);
  };

  const announce = (): void => {
    for (const [actorRef, rootId] of [...live]) {
      if (actorRef.getSnapshot()?.status === 'active') inspector.inspect.next?.({ type: '@xstate.actor', actorRef, rootId });
      else live.delete(actorRef);
    }
  };

  const everything: Observer<InspectionEvent> = { next: forward };

  const instanceObserver = (workerId: string, instanceId: () => string | null): Observer<InspectionEvent> | undefined => {
    if (selection.all || selection.instances.has(workerId)) return everything;
    if (selection.instances.size === 0) return undefined;
    // Named by a cloud id it does not have yet: chosen (for good) once it has it.
    let chosen = false;
    return {
      next: (event) => {
        if (!chosen) {
          const id = instanceId();
          chosen = id !== null && selection.instances.has(id);
          if (!chosen) return;
        }
        forward(event);
      },
    };
  };

  inspector.start();
  return {
    observerFor(actor: InspectedActor) {
      if (actor.kind === 'instance') return instanceObserver(actor.workerId, actor.instanceId);
      return selection.all || selection.pool ? everything : undefined;
    },
    stop() {
      connection.stop();
      live.clear();
    },
  };
}
