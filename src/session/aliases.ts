import { TOPIC_ALIAS_MAXIMUM } from "./properties";
import { ALIASES_KEY } from "./keys";

/**
 * MQTT 5 topic aliases set by the client on this connection [MQTT-3.3.2-8..12]. Durable
 * (storage `aliases`, written only when an alias changes) so they survive hibernation.
 */
export class TopicAliases {
  private map: Map<number, string> | null = null;

  constructor(private readonly storage: DurableObjectStorage) {}

  /**
   * The topic a PUBLISH is for: its own topic (which also sets the alias) or the alias's.
   * null: the alias is 0, over our maximum, or unknown (a protocol error, 0x94).
   */
  async resolve(alias: number, topic: string): Promise<string | null> {
    if (alias === 0 || alias > TOPIC_ALIAS_MAXIMUM) return null;
    const map = await this.load();
    if (topic === "") return map.get(alias) ?? null;
    if (map.get(alias) !== topic) {
      map.set(alias, topic);
      await this.storage.put(ALIASES_KEY, [...map]);
    }
    return topic;
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
