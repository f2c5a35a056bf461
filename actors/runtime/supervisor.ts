// Node-level view of actor health: who restarted, who escalated and when it will be rebuilt.
// `/readyz` reads `escalated` (or `readinessProblems`); `/metrics` counts restarts through `onRestart`.

/** An actor that spent its restart budget: it refuses work until it is rebuilt. */
export interface Escalation {
  /** The crash that spent the budget (the latest one when a rebuild failed again). */
  readonly reason: string;
  /** When it first escalated; it has been escalated ever since (epoch ms). */
  readonly since: number;
  /** When the next rebuild is due (epoch ms). */
  readonly nextRebuildAt: number;
}

export interface Supervisor {
  /** Called on every restart of an actor's handler (after a crash). */
  readonly recordRestart: (actor: string, reason: string) => void;
  /** Called when an actor spent its restart budget, and again when a rebuild of it failed the same way. */
  readonly escalate: (actor: string, reason: string, at: number, nextRebuildAt: number) => void;
  /** Called when a rebuilt incarnation serves again, or the escalated actor was stopped: no longer escalated. */
  readonly recover: (actor: string) => void;
  /** Actors escalated right now; empty means ready. */
  readonly escalated: () => ReadonlyMap<string, Escalation>;
}

export interface SupervisorHooks {
  readonly onRestart?: (actor: string, reason: string) => void;
  readonly onEscalate?: (actor: string, escalation: Escalation) => void;
  readonly onRecover?: (actor: string) => void;
}

export const makeSupervisor = (hooks: SupervisorHooks = {}): Supervisor => {
  const escalated = new Map<string, Escalation>();
  return {
    recordRestart: (actor, reason) => hooks.onRestart?.(actor, reason),
    escalate: (actor, reason, at, nextRebuildAt) => {
      const escalation = { reason, since: escalated.get(actor)?.since ?? at, nextRebuildAt };
      escalated.set(actor, escalation);
      hooks.onEscalate?.(actor, escalation);
    },
    recover: (actor) => {
      if (escalated.delete(actor)) hooks.onRecover?.(actor);
    },
    escalated: () => escalated,
  };
};

/** One line per escalated actor, for `/readyz`: "actor X escalated since T: reason; rebuilding at T'". */
export const readinessProblems = (supervisor: Pick<Supervisor, "escalated">): string[] =>
  [...supervisor.escalated()].map(
    ([actor, e]) => `actor ${actor} escalated since ${new Date(e.since).toISOString()}: ${e.reason}; rebuilding at ${new Date(e.nextRebuildAt).toISOString()}`,
  );
