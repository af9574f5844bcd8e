/* The server's API, relative to where the server is mounted. */
import { sessionEnded } from "./session.js";
import { state } from "./state.js";
import { unreachable } from "./status.js";

export const API = "api/v1/";
export const SESSION = "kill-switch/session";
export const PROBE = SESSION + "?probe=1"; // 200 {signed_in: false} rather than a 401 the browser logs

export class HttpError {
  constructor(status, body) {
    this.status = status;
    this.body = body || {};
    this.message = (body && body.detail) || "HTTP " + status;
  }
}

export class Unreachable {
  constructor() {
    this.message = "Cannot reach the agentguard server.";
  }
}

/* The JSON answer; a 401 outside the session endpoint ends the session, a network failure
   shows the server as unreachable. */
export function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const options = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (method !== "GET" && state.session && state.session.csrf_token) {
    headers["X-CSRF-Token"] = state.session.csrf_token;
  }
  const generation = state.generation;
  return fetch(path, options).then(
    (response) => {
      if (response.status === 204) return null;
      return response
        .json()
        .catch(() => null)
        .then((data) => {
          if (response.ok) return data;
          const error = new HttpError(response.status, data);
          if (response.status === 401 && path !== SESSION && generation === state.generation) {
            sessionEnded(error.message);
          }
          throw error;
        });
    },
    () => {
      if (generation === state.generation && state.session) unreachable();
      throw new Unreachable();
    }
  );
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) search.set(name, value);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}
