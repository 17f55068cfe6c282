/// <reference types="vitest/config" />
// The portal's build: served by the cloud under /portal/, into the cloud's Python package so
// the wheel carries it (cloud/portal/static, never committed).
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/portal/",
  plugins: [react()],
  build: {
    outDir: "../cloud/portal/static",
    emptyOutDir: true,
    assetsDir: "assets",
    // No inline module-preload polyfill: the page's CSP allows no inline script.
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 900,
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test-setup.ts"],
  },
});
