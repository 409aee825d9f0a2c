/** node-postgres's SCRAM-SHA-256 client (exported as pg/lib/*), used by the hand-written pg-client. */
declare module 'pg/lib/crypto/sasl.js' {
  export interface SaslSession {
    mechanism: string;
    response: string;
  }
  export function startSession(mechanisms: string[], stream?: unknown): SaslSession;
  export function continueSession(session: SaslSession, password: string, serverData: string, stream?: unknown): Promise<void>;
  export function finalizeSession(session: SaslSession, serverData: string): void;
}
