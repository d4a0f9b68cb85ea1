import type { CloseCause } from "../protocol/codes";
import { TOPIC_ALIAS_MAXIMUM } from "./properties";
import { ALIASES_KEY } from "./keys";

/** The topic a PUBLISH is for, or why it has none: the close it calls for. */
export type AliasResult = { ok: true; topic: string } | { ok: false; cause: Extract<CloseCause, "topicAliasInvalid" | "protocolError"> };

/**
 * MQTT 5 topic aliases set by the client on this connection [MQTT-3.3.2-8..12]. Durable
 * (storage `aliases`, written only when an alias changes) so they survive hibernation.
 */
export class TopicAliases {
  private map: Map<number, string> | null = null;

  constructor(private readonly storage: DurableObjectStorage) {}

  /**
   * The topic a PUBLISH is for: its own topic (which also sets the alias) or the alias's.
   * An alias of 0 or over our maximum is Topic Alias invalid (0x94) [MQTT-3.3.2-8] [MQTT-3.3.2-9];
   * an empty topic with an alias never set is a Protocol Error (0x82, §3.3.2.3.4).
   */
  async resolve(alias: number, topic: string): Promise<AliasResult> {
    if (alias === 0 || alias > TOPIC_ALIAS_MAXIMUM) return { ok: false, cause: "topicAliasInvalid" };
    const map = await this.load();
    if (topic === "") {
      const known = map.get(alias);
      return known === undefined ? { ok: false, cause: "protocolError" } : { ok: true, topic: known };
    }
    if (map.get(alias) !== topic) {
      map.set(alias, topic);
      await this.storage.put(ALIASES_KEY, [...map]);
    }
    return { ok: true, topic };
  }

  private async load(): Promise<Map<number, string>> {
    if (this.map) return this.map;
    const stored = await this.storage.get(ALIASES_KEY);
    const map = new Map<number, string>();
    if (Array.isArray(stored)) {
      for (const entry of stored) {
        if (Array.isArray(entry) && typeof entry[0] === "number" && typeof entry[1] === "string") map.set(entry[0], entry[1]);
      }
    }
    this.map = map;
    return map;
  }
}
