/** What a host page configures, through the loader's `data-` attributes or `mount()` directly. */
export interface WidgetOptions {
  /** Base URL of the chat API; "" means the page's own origin (the edge proxies `/v1/*`). */
  endpoint: string;
  /** The signed-in customer's token, sent as `Authorization: Bearer ...`; absent for guests. */
  customerToken?: string;
}
