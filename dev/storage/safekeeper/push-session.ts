/**
 * The safekeeper's side of START_WAL_PUSH: each frame is applied (WAL written and fdatasync'd,
 * state persisted) and answered with a feedback frame. Frames are handled one at a time on purpose:
 * the pgwire server reads the same socket again once the session ends, so no reader may be left
 * pending. Batching happens on the pusher's side, which keeps one frame in flight and packs
 * everything that arrived meanwhile into the next one. A malformed frame ends this session with an
 * error and touches nothing else.
 */
import { decodePusherFrame, encodeFeedbackFrame, ProtocolFrameError } from '../../../drivers';
import { PgWireError } from '../pgwire/server';
import type { PushToken, Timeline, TimelineState } from './timeline';

export async function runPushSession(
  timeline: Timeline,
  token: PushToken,
  io: { incoming: AsyncIterable<Buffer>; send(payload: Buffer): Promise<void> },
): Promise<void> {
  const feedback = (s: TimelineState) => io.send(encodeFeedbackFrame({ flushLsn: s.flushLsn, commitLsn: s.commitLsn, term: s.term }));
  // A newer term or session took over: say so now (the pusher stops on a higher term), and the
  // session fails on the pusher's next frame.
  token.onRevoked = (s) => void feedback(s).catch(() => undefined);
  try {
    // The pusher learns at once where this safekeeper stands after the truncation.
    await feedback(timeline.snapshot());
    for await (const raw of io.incoming) {
      const f = decodePusherFrame(raw);
      const state =
        f.kind === 'wal'
          ? await timeline.append(token, [{ startLsn: f.startLsn, data: f.data }], f.commitLsn)
          : await timeline.append(token, [], f.commitLsn);
      await feedback(state);
    }
  } catch (err) {
    if (err instanceof ProtocolFrameError) throw new PgWireError(`malformed push frame: ${err.message}`, '08P01');
    throw err;
  } finally {
    token.onRevoked = undefined;
    await timeline.endPush(token);
  }
}
