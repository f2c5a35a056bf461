// Node-level view of actor health: who restarted, who escalated.
// `/readyz` reads `escalated`; `/metrics` counts restarts through `onRestart`.

export interface Supervisor {
  /** Called on every restart of an actor's handler (after a crash). */
  readonly recordRestart: (actor: string, reason: string) => void;
  /** Called when an actor exceeded its restart budget and stopped for good. */
  readonly escalate: (actor: string, reason: string) => void;
  /** Actors that escalated, with the reason; empty means ready. */
  readonly escalated: () => ReadonlyMap<string, string>;
}

export interface SupervisorHooks {
  readonly onRestart?: (actor: string, reason: string) => void;
  readonly onEscalate?: (actor: string, reason: string) => void;
}

export const makeSupervisor = (hooks: SupervisorHooks = {}): Supervisor => {
  const escalated = new Map<string, string>();
  return {
    recordRestart: (actor, reason) => hooks.onRestart?.(actor, reason),
    escalate: (actor, reason) => {
      escalated.set(actor, reason);
      hooks.onEscalate?.(actor, reason);
    },
    escalated: () => escalated,
  };
};
