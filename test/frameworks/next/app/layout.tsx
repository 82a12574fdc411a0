import type { ReactNode } from "react";
import { Buttons } from "./buttons";

export default function Layout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        {children}
        <Buttons />
      </body>
    </html>
  );
}
