// Asking any one node for the cluster's member list (a node reads the members bucket and
// answers; operators need no access to the bucket). `tern cluster status` prints it; the
// commands that ask every node at once use it to stop waiting once each member answered.
import { Effect, Exit } from "effect";
import type { NatsConnection } from "@nats-io/transport-node";
import { callEndpoint, type Endpoint } from "../actors/runtime/remote.ts";
import { MembersReply, MembersRequest, MembersUnavailable } from "../protocol/membership.ts";
import type { Subjects } from "../protocol/subjects.ts";

export const membersEndpoint: Endpoint<MembersRequest, MembersReply, MembersUnavailable> = {
  request: MembersRequest,
  response: MembersReply,
  error: MembersUnavailable,
};

/** The ids of the cluster's members, or undefined when no node told them in time (the caller then waits for silence). */
export const memberIds = (nc: NatsConnection, subjects: Subjects, timeoutMs: number): Promise<ReadonlySet<string> | undefined> =>
  Effect.runPromiseExit(callEndpoint(nc, subjects.clusterMembers, membersEndpoint, {}, { timeoutMs })).then((exit) =>
    Exit.isSuccess(exit) ? new Set(exit.value.value.members.map((member) => member.node)) : undefined,
  );
