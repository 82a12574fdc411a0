import { Links, Meta, Outlet, Scripts } from "react-router";
import { createMiddleware } from "persist-session/react-router";
import { sessions } from "./state";

export const middleware = [createMiddleware(sessions)];

export function Layout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en">
      <head>
        <meta charSet="utf-8" />
        <Meta />
        <Links />
      </head>
      <body>
        {children}
        <Scripts />
      </body>
    </html>
  );
}

export default function App() {
  return <Outlet />;
}
