/**
 * The widget's entry module, `assets/widget-[hash].js`: the loader imports it and calls `mount`.
 * React and the widget's code live here and in the chunks it imports, never in `loader.js`.
 */
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

import { ChatWidget } from './ChatWidget';
import type { WidgetOptions } from './options';
import './widget.css';

/** Render the widget into `element`; returns the function that removes it again. */
export function mount(element: HTMLElement, options: WidgetOptions): () => void {
  const root = createRoot(element);
  root.render(
    <StrictMode>
      <ChatWidget {...options} />
    </StrictMode>,
  );
  return () => root.unmount();
}
